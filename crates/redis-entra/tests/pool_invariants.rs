//! The pools' contract, attacked: a pool never hands out a connection in a state its borrower
//! did not ask for, and never turns a lost transaction into a silent success.
//!
//! Each test is named after the invariant it tries to break (see `connect::pool`'s docs).
#![cfg(all(feature = "r2d2", feature = "bb8"))]

mod common;

use std::time::Duration;

use futures::FutureExt;
use redis::{AsyncCommands, Commands};
use redis_entra::{
    BlockingTokenManager, EntraAsyncConnectionManager, EntraConnectionManager, EntraSyncConnection,
    TokenManager,
};
use redis_entra_emulator::Emulator;

use common::*;

/// Reads `key` on a connection of its own (not from the pool under test).
fn read_fresh(emulator: &Emulator, tokens: &BlockingTokenManager, key: &str) -> Option<String> {
    let mut conn = EntraSyncConnection::connect(connect_options(emulator), tokens.clone()).unwrap();
    conn.get(key).unwrap()
}

/// Waits until `at` has passed (the test is about what happens after a token's expiry).
fn sleep_past(at: std::time::SystemTime) {
    if let Ok(left) = at.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(left + Duration::from_millis(300));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn r2d2_pool(
    emulator: &Emulator,
    tokens: &BlockingTokenManager,
    test_on_check_out: bool,
) -> r2d2::Pool<EntraConnectionManager> {
    r2d2::Pool::builder()
        .max_size(1)
        .test_on_check_out(test_on_check_out)
        .build(EntraConnectionManager::new(
            connect_options(emulator),
            tokens.clone(),
        ))
        .unwrap()
}

/// The reviewers' case: borrower A opens a `MULTI`, queues a write and gives the connection back
/// early (an error, a `?`); borrower B's write must run, or fail visibly: never `Ok` and lost.
#[test]
fn r2d2_never_hands_out_a_connection_left_inside_multi() {
    let rt = runtime();
    let emulator = rt.block_on(emulator(Duration::from_secs(60)));
    let tokens = BlockingTokenManager::new(service_principal(&emulator), quick_options()).unwrap();
    for test_on_check_out in [true, false] {
        let pool = r2d2_pool(&emulator, &tokens, test_on_check_out);
        let key = format!("inv:r2d2:multi:{test_on_check_out}");
        {
            let mut a = pool.get().unwrap();
            redis::cmd("MULTI").exec(&mut *a).unwrap();
            let _: () = a.set("inv:r2d2:a", 1).unwrap();
            // A returns early: the connection goes back to the pool inside MULTI.
        }
        let mut b = pool.get().unwrap();
        let result: redis::RedisResult<()> = b.set(&key, 2);
        drop(b);
        if result.is_ok() {
            assert_eq!(
                read_fresh(&emulator, &tokens, &key).as_deref(),
                Some("2"),
                "B's SET was acknowledged (test_on_check_out {test_on_check_out}) but never ran"
            );
        }
        assert_eq!(read_fresh(&emulator, &tokens, "inv:r2d2:a"), None);
    }
    drop(tokens);
    rt.block_on(emulator.shutdown());
}

/// The same with `WATCH`: a borrower that returns a connection with a key watched must not make
/// the next borrower's transaction fail (or succeed) because of someone else's `WATCH`.
#[test]
fn r2d2_never_hands_out_a_connection_with_a_watch_left_open() {
    let rt = runtime();
    let emulator = rt.block_on(emulator(Duration::from_secs(60)));
    let tokens = BlockingTokenManager::new(service_principal(&emulator), quick_options()).unwrap();
    let pool = r2d2_pool(&emulator, &tokens, false);
    {
        let mut a = pool.get().unwrap();
        redis::cmd("WATCH").arg("inv:w").exec(&mut *a).unwrap();
    }
    // Someone else changes the watched key.
    let mut other =
        EntraSyncConnection::connect(connect_options(&emulator), tokens.clone()).unwrap();
    let _: () = other.set("inv:w", "other").unwrap();
    let mut b = pool.get().unwrap();
    let (n,): (i64,) = redis::pipe()
        .atomic()
        .incr("inv:w:n", 1)
        .query(&mut *b)
        .expect("B's transaction watched nothing, so it runs");
    assert_eq!(n, 1);
    drop(b);
    drop(tokens);
    rt.block_on(emulator.shutdown());
}

/// A borrower that panics inside `MULTI`: the connection is not handed out again as it is.
#[test]
fn r2d2_a_borrower_that_panics_inside_multi_does_not_poison_the_next_one() {
    let rt = runtime();
    let emulator = rt.block_on(emulator(Duration::from_secs(60)));
    let tokens = BlockingTokenManager::new(service_principal(&emulator), quick_options()).unwrap();
    let pool = r2d2_pool(&emulator, &tokens, false);
    let p = pool.clone();
    let panicked = std::thread::spawn(move || {
        let mut a = p.get().unwrap();
        redis::cmd("MULTI").exec(&mut *a).unwrap();
        panic!("borrower A fails inside its transaction");
    })
    .join();
    assert!(panicked.is_err());
    let mut b = pool.get().unwrap();
    let result: redis::RedisResult<()> = b.set("inv:r2d2:panic", 2);
    drop(b);
    if result.is_ok() {
        assert_eq!(
            read_fresh(&emulator, &tokens, "inv:r2d2:panic").as_deref(),
            Some("2")
        );
    }
    drop(tokens);
    rt.block_on(emulator.shutdown());
}

/// A transaction outlives the connection's token (no `AUTH` may go inside it, so the server
/// closes the connection at expiry): the rest of the transaction must not run, piecemeal and
/// non-atomically, on the replacement connection.
#[test]
fn sync_a_reconnect_inside_multi_fails_the_transaction_instead_of_running_it_piecemeal() {
    let rt = runtime();
    let emulator = rt.block_on(emulator(Duration::from_secs(3)));
    let tokens = BlockingTokenManager::new(service_principal(&emulator), quick_options()).unwrap();
    let mut conn =
        EntraSyncConnection::connect(connect_options(&emulator), tokens.clone()).unwrap();
    redis::cmd("MULTI").exec(&mut conn).unwrap();
    let _: () = conn.set("inv:sync:t1", 1).unwrap();
    sleep_past(conn.token_expires_on());
    let second: redis::RedisResult<()> = conn.set("inv:sync:t2", 2);
    let exec: redis::RedisResult<redis::Value> = redis::cmd("EXEC").query(&mut conn);
    assert!(
        second.is_err() || exec.is_err(),
        "the transaction was lost with the connection: something must say so"
    );
    assert!(exec.is_err(), "EXEC of a lost transaction is an error");
    assert_eq!(read_fresh(&emulator, &tokens, "inv:sync:t1"), None);
    assert_eq!(
        read_fresh(&emulator, &tokens, "inv:sync:t2"),
        None,
        "part of a transaction ran outside it"
    );
    // The connection is usable again once the transaction is over.
    let _: () = conn.set("inv:sync:after", 3).unwrap();
    drop(conn);
    drop(tokens);
    rt.block_on(emulator.shutdown());
}

/// `WATCH`, then the connection is replaced (here: it was lost): the optimistic lock is gone
/// with it, so the `EXEC` that follows must not commit as if the watched key were unchanged.
#[test]
fn sync_a_reconnect_after_watch_never_commits_the_transaction() {
    let rt = runtime();
    let emulator = rt.block_on(emulator(Duration::from_secs(60)));
    let tokens = BlockingTokenManager::new(service_principal(&emulator), quick_options()).unwrap();
    let mut conn =
        EntraSyncConnection::connect(connect_options(&emulator), tokens.clone()).unwrap();
    redis::cmd("WATCH")
        .arg("inv:sync:w")
        .exec(&mut conn)
        .unwrap();
    assert!(emulator.faults().close_all_connections() >= 1);
    // The loss is noticed (a failed command) before the transaction is sent; the gateway
    // closes the connection asynchronously, so a command or two may still be answered.
    let noticed = (0..500).any(|_| {
        let failed = redis::cmd("GET")
            .arg("inv:sync:w")
            .query::<Option<String>>(&mut conn)
            .is_err();
        if !failed {
            std::thread::sleep(Duration::from_millis(10));
        }
        failed
    });
    assert!(noticed, "the closed connection never failed a command");
    let mut other =
        EntraSyncConnection::connect(connect_options(&emulator), tokens.clone()).unwrap();
    let _: () = other.set("inv:sync:w", "theirs").unwrap();
    let result: redis::RedisResult<Option<(String,)>> = redis::pipe()
        .atomic()
        .set("inv:sync:w", "mine")
        .query(&mut conn);
    assert!(
        !matches!(result, Ok(Some(_))),
        "the transaction committed though its WATCH was lost: {result:?}"
    );
    assert_eq!(
        read_fresh(&emulator, &tokens, "inv:sync:w").as_deref(),
        Some("theirs")
    );
    drop((conn, other, tokens));
    rt.block_on(emulator.shutdown());
}

async fn bb8_pool(
    emulator: &Emulator,
    manager: &TokenManager,
) -> bb8::Pool<EntraAsyncConnectionManager> {
    bb8::Pool::builder()
        .max_size(1)
        .test_on_check_out(false)
        .build(EntraAsyncConnectionManager::new(
            connect_options(emulator),
            manager.clone(),
        ))
        .await
        .unwrap()
}

async fn read_fresh_async(
    emulator: &Emulator,
    manager: &TokenManager,
    key: &str,
) -> Option<String> {
    let mut conn =
        redis_entra::EntraConnection::connect(connect_options(emulator), manager.clone())
            .await
            .unwrap();
    conn.get(key).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_never_hands_out_a_connection_left_inside_multi() {
    let emulator = emulator(Duration::from_secs(60)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let pool = bb8_pool(&emulator, &manager).await;
    {
        let mut a = pool.get().await.unwrap();
        redis::cmd("MULTI").exec_async(&mut *a).await.unwrap();
        let _: () = a.set("inv:bb8:a", 1).await.unwrap();
    }
    let mut b = pool.get().await.unwrap();
    let result: redis::RedisResult<()> = b.set("inv:bb8:b", 2).await;
    drop(b);
    if result.is_ok() {
        assert_eq!(
            read_fresh_async(&emulator, &manager, "inv:bb8:b")
                .await
                .as_deref(),
            Some("2"),
            "B's SET was acknowledged but never ran"
        );
    }
    emulator.shutdown().await;
}

/// A `MULTI` whose future is dropped after the command was handed to the connection (a timeout,
/// a `select!`): the pool can't know whether Redis opened the transaction, so the connection is
/// not handed out as if it hadn't.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_a_multi_cancelled_after_it_was_sent_never_lets_the_next_borrower_queue() {
    let emulator = emulator(Duration::from_secs(60)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let pool = bb8_pool(&emulator, &manager).await;
    let mut sent = false;
    for attempt in 0..5 {
        let mut a = pool.get().await.unwrap();
        // Warm up so that the next command needs no AUTH or PING first.
        let _: () = a.set("inv:bb8:warm", 1).await.unwrap();
        let multi = redis::cmd("MULTI");
        // One poll hands MULTI to the connection; the reply is never awaited.
        match multi.exec_async(&mut *a).now_or_never() {
            None => {
                sent = true;
                break;
            }
            // Answered (or failed) within one poll: MULTI may not have been sent; try again.
            Some(r) => eprintln!("attempt {attempt}: MULTI finished in one poll: {r:?}"),
        }
    }
    assert!(sent, "never caught MULTI between sending and its reply");
    let mut b = pool.get().await.unwrap();
    let result: redis::RedisResult<()> = b.set("inv:bb8:cancel", 2).await;
    drop(b);
    if result.is_ok() {
        assert_eq!(
            read_fresh_async(&emulator, &manager, "inv:bb8:cancel")
                .await
                .as_deref(),
            Some("2"),
            "B's SET was acknowledged but queued in A's abandoned MULTI"
        );
    }
    emulator.shutdown().await;
}

/// A borrower task that panics inside `MULTI`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_a_borrower_that_panics_inside_multi_does_not_poison_the_next_one() {
    let emulator = emulator(Duration::from_secs(60)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let pool = bb8_pool(&emulator, &manager).await;
    let p = pool.clone();
    let task = tokio::spawn(async move {
        let mut a = p.get().await.unwrap();
        redis::cmd("MULTI").exec_async(&mut *a).await.unwrap();
        panic!("borrower A fails inside its transaction");
    });
    assert!(task.await.is_err());
    let mut b = pool.get().await.unwrap();
    let result: redis::RedisResult<()> = b.set("inv:bb8:panic", 2).await;
    drop(b);
    if result.is_ok() {
        assert_eq!(
            read_fresh_async(&emulator, &manager, "inv:bb8:panic")
                .await
                .as_deref(),
            Some("2")
        );
    }
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_a_reconnect_inside_multi_fails_the_transaction_instead_of_running_it_piecemeal() {
    let emulator = emulator(Duration::from_secs(3)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let pool = bb8_pool(&emulator, &manager).await;
    let mut conn = pool.get().await.unwrap();
    redis::cmd("MULTI").exec_async(&mut *conn).await.unwrap();
    let _: () = conn.set("inv:bb8:t1", 1).await.unwrap();
    let expires = conn.token_expires_on().await;
    tokio::task::spawn_blocking(move || sleep_past(expires))
        .await
        .unwrap();
    let second: redis::RedisResult<()> = conn.set("inv:bb8:t2", 2).await;
    let exec: redis::RedisResult<redis::Value> = redis::cmd("EXEC").query_async(&mut *conn).await;
    assert!(
        second.is_err() || exec.is_err(),
        "the transaction was lost with the connection: something must say so"
    );
    assert!(exec.is_err(), "EXEC of a lost transaction is an error");
    assert_eq!(
        read_fresh_async(&emulator, &manager, "inv:bb8:t1").await,
        None
    );
    assert_eq!(
        read_fresh_async(&emulator, &manager, "inv:bb8:t2").await,
        None,
        "part of a transaction ran outside it"
    );
    let _: () = conn.set("inv:bb8:after", 3).await.unwrap();
    drop(conn);
    emulator.shutdown().await;
}

/// The server refuses every new token (the identity lost its policy) while the connection's own
/// token is still valid: commands keep running, and the refused `AUTH` is retried with backoff,
/// not before every command (nor does each refusal cost a token request).
#[test]
fn sync_a_refused_reauthentication_is_retried_with_backoff_not_per_command() {
    let rt = runtime();
    let emulator = rt.block_on(emulator(Duration::from_secs(60)));
    let tokens = BlockingTokenManager::new(service_principal(&emulator), quick_options()).unwrap();
    let mut conn =
        EntraSyncConnection::connect(connect_options(&emulator), tokens.clone()).unwrap();
    let mut events = tokens.events();
    let oid = tokens.current().unwrap().username().to_string();
    assert!(emulator.remove_policy_assignment(&oid));
    tokens.refresh_now();
    let generation = tokens.current().unwrap().generation();
    while tokens.current().unwrap().generation() == generation {
        std::thread::sleep(Duration::from_millis(10));
    }
    let requests_before = tokens.manager().stats().requests;
    for i in 0..300 {
        let _: () = conn.set("inv:sync:backoff", i).unwrap();
    }
    let mut refused = 0;
    while let Ok(e) = events.try_recv() {
        if matches!(e, redis_entra::TokenEvent::ReauthenticationFailed { .. }) {
            refused += 1;
        }
    }
    assert!(
        (1..=12).contains(&refused),
        "{refused} refused AUTHs for 300 commands"
    );
    let requests = tokens.manager().stats().requests - requests_before;
    assert!(
        requests <= 4,
        "{requests} token requests for {refused} refusals"
    );
    drop((conn, tokens));
    rt.block_on(emulator.shutdown());
}
