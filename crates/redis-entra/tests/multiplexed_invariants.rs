//! `EntraConnection`'s contract, attacked (see `connect::multiplexed`'s docs): each test is named
//! after the invariant it tries to break.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use redis::AsyncCommands;
use redis_entra::{EntraConnection, Protocol, TokenEvent, TokenManager};
use tokio::sync::broadcast;

use common::*;

/// Waits for an event that `pick` accepts.
async fn wait_for(
    events: &mut broadcast::Receiver<TokenEvent>,
    within: Duration,
    mut pick: impl FnMut(&TokenEvent) -> bool,
) -> TokenEvent {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(e) if pick(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the event came")
}

/// The identity loses its access policy, so every re-`AUTH` and every reconnect is refused;
/// the application then drops the connection. Its task must stop and release the token manager,
/// instead of retrying forever (forcing a token request every couple of seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_while_refused_stops_its_task_and_releases_the_manager() {
    let emulator = emulator(Duration::from_secs(3)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let mut conn = EntraConnection::connect(connect_options(&emulator), manager.clone())
        .await
        .unwrap();
    let _: () = conn.set("inv:mx:drop", 1).await.unwrap();
    let oid = manager.current().unwrap().username().to_string();
    assert!(emulator.remove_policy_assignment(&oid));
    // The next token is refused on the live connection.
    wait_for(&mut events, Duration::from_secs(10), |e| {
        matches!(e, TokenEvent::ReauthenticationFailed { .. })
    })
    .await;
    let mut watch = manager.watch();
    drop(conn);
    drop(manager);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while watch.next().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the connection's task kept the token manager alive after every handle was dropped"
    );
    emulator.shutdown().await;
}

/// One dead connection is replaced once, not once per signal of its death (a failed command and
/// the disconnection push both report it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_connection_is_replaced_once() {
    let emulator = emulator(Duration::from_secs(60)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut options = connect_options(&emulator);
    options.protocol = Protocol::Resp3;
    let mut conn = EntraConnection::connect(options, manager.clone())
        .await
        .unwrap();
    let mut events = manager.events();
    let _: () = conn.set("inv:mx:once", 1).await.unwrap();
    assert_eq!(emulator.faults().close_all_connections(), 1);
    // A command sent on the dead connection fails, and the push also reports the loss.
    let _ = conn.get::<_, Option<String>>("inv:mx:once").await;
    wait_for(&mut events, Duration::from_secs(10), |e| {
        matches!(e, TokenEvent::Reconnected { .. })
    })
    .await;
    for _ in 0..20 {
        let v: Option<String> = conn.get("inv:mx:once").await.unwrap();
        assert_eq!(v.as_deref(), Some("1"));
    }
    let mut reconnects = 1;
    while let Ok(e) = events.try_recv() {
        if let TokenEvent::Reconnected { reason, .. } = e {
            eprintln!("second reconnect: {reason}");
            reconnects += 1;
        }
    }
    assert_eq!(
        reconnects, 1,
        "one lost connection, {reconnects} reconnects"
    );
    emulator.shutdown().await;
}

/// A blocking command outlives the RESP2 health probe's limit: the probe waits behind it, and a
/// slow reply is not a dead connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reply_is_not_taken_for_a_dead_connection() {
    let emulator = emulator(Duration::from_secs(60)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut options = connect_options(&emulator);
    options.protocol = Protocol::Resp2;
    options.health_check_interval = Some(Duration::from_millis(200));
    options.response_timeout = None;
    let mut conn = EntraConnection::connect(options, manager.clone())
        .await
        .unwrap();
    let mut events = manager.events();
    let popped: Option<(String, String)> = conn.blpop("inv:mx:empty", 6.5).await.unwrap();
    assert_eq!(popped, None);
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e, TokenEvent::Reconnected { .. }),
            "a healthy connection was replaced: {e:?}"
        );
    }
    emulator.shutdown().await;
}

/// A `MULTI` sent by hand on the connection (separate round trips): a token arriving meanwhile
/// must not put an `AUTH` inside the transaction (its `+OK` would shift `EXEC`'s results).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_arriving_inside_a_hand_written_multi_waits_for_exec() {
    let emulator = emulator(Duration::from_secs(60)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut conn = EntraConnection::connect(connect_options(&emulator), manager.clone())
        .await
        .unwrap();
    let mut events = manager.events();
    redis::cmd("MULTI").exec_async(&mut conn).await.unwrap();
    let _: () = conn.set("inv:mx:multi", "v").await.unwrap();
    let generation = manager.current().unwrap().generation();
    manager.refresh_now();
    wait_for(
        &mut events,
        Duration::from_secs(10),
        |e| matches!(e, TokenEvent::Refreshed { generation: g, .. } if *g > generation),
    )
    .await;
    // Give the connection's task every chance to send its AUTH (if it wrongly would).
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        wait_for(&mut events, Duration::from_secs(1), |e| {
            matches!(e, TokenEvent::ConnectionReauthenticated { .. })
        }),
    )
    .await;
    let results: Vec<redis::Value> = redis::cmd("EXEC").query_async(&mut conn).await.unwrap();
    assert_eq!(
        results,
        vec![redis::Value::Okay],
        "EXEC answered for exactly the commands the application queued"
    );
    // …and the new token reaches the connection once the transaction is over.
    let reauth = wait_for(&mut events, Duration::from_secs(10), |e| {
        matches!(e, TokenEvent::ConnectionReauthenticated { .. })
    })
    .await;
    assert!(matches!(
        reauth,
        TokenEvent::ConnectionReauthenticated { .. }
    ));
    emulator.shutdown().await;
}

/// Tokens rotate every second while connections are cut at random: every new token reaches
/// every live connection, so the gateway never closes one at its token's expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_new_token_reaches_the_live_connection_even_across_reconnects() {
    let emulator = emulator(Duration::from_secs(2)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut conns = Vec::new();
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let mut options = connect_options(&emulator);
        options.protocol = protocol;
        conns.push(
            EntraConnection::connect(options, manager.clone())
                .await
                .unwrap(),
        );
    }
    emulator.faults().set_random_close(1.0).unwrap();
    let until = SystemTime::now() + Duration::from_secs(8);
    let mut i = 0u64;
    while SystemTime::now() < until {
        for c in conns.iter_mut() {
            i += 1;
            let _ = c.set::<_, _, ()>("inv:mx:rot", i).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    emulator.faults().set_random_close(0.0).unwrap();
    assert_eq!(
        emulator.stats().closed_at_expiry.load(Ordering::Relaxed),
        0,
        "a connection was left on an old token until the server closed it"
    );
    emulator.shutdown().await;
}

/// A hand-written `MULTI` kept open until its connection's token nears expiry: the connection
/// must be replaced (the server would close it), and the transaction then fails as a whole
/// instead of its remaining commands running outside it on the new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_multi_outliving_its_token_fails_instead_of_running_piecemeal() {
    let emulator = emulator(Duration::from_secs(3)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut conn = EntraConnection::connect(connect_options(&emulator), manager.clone())
        .await
        .unwrap();
    let mut events = manager.events();
    redis::cmd("MULTI").exec_async(&mut conn).await.unwrap();
    let _: () = conn.set("inv:mx:t1", 1).await.unwrap();
    let replaced = wait_for(&mut events, Duration::from_secs(10), |e| {
        matches!(e, TokenEvent::Reconnected { .. })
    })
    .await;
    eprintln!("{replaced:?}");
    let second: redis::RedisResult<()> = conn.set("inv:mx:t2", 2).await;
    assert!(second.is_err(), "a command of a lost transaction ran");
    let exec: redis::RedisResult<redis::Value> = redis::cmd("EXEC").query_async(&mut conn).await;
    assert!(exec.is_err(), "EXEC of a lost transaction is an error");
    let t1: Option<String> = conn.get("inv:mx:t1").await.unwrap();
    let t2: Option<String> = conn.get("inv:mx:t2").await.unwrap();
    assert_eq!((t1, t2), (None, None), "part of a transaction ran");
    assert_eq!(
        emulator.stats().closed_at_expiry.load(Ordering::Relaxed),
        0,
        "the connection was replaced before the server closed it"
    );
    emulator.shutdown().await;
}
