//! fred through the emulator's gateway (TLS with the emulator's CA), authenticated by the token
//! manager: continuous traffic across many token rotations without a failed command, and the
//! gateway never has to close the connection at expiry.
#![cfg(feature = "fred")]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use redis_entra::connect::fred::{builder, fixed_refresh_interval, keep_authenticated};
use redis_entra::{EntraFredCredentials, TokenEvent, TokenManager};

use common::*;

/// One `SET` then `GET` of a fresh value, with a time limit; `true` when both succeeded.
async fn round(client: &Client, i: u64) -> bool {
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let _: () = client.set("fred:k", i, None, None, false).await?;
        client.get::<u64, _>("fred:k").await
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

#[tokio::test]
async fn fred_stays_authenticated_across_ten_rotations() {
    let lifetime = Duration::from_secs(3);
    let emulator = emulator(lifetime).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let client = builder(&connect_options(&emulator), &manager)
        .unwrap()
        .build()
        .unwrap();
    client.init().await.unwrap();
    let reauth = keep_authenticated(&client, manager.clone()).unwrap();

    let whoami: String = client
        .custom(
            CustomCommand::new_static("ACL", ClusterHash::FirstKey, false),
            vec!["WHOAMI"],
        )
        .await
        .unwrap();
    assert_eq!(whoami, emulator.service_principal().object_id);

    let started = Instant::now();
    let (mut ok, mut failed, mut reauths) = (0u64, 0u64, 0u32);
    let mut i = 0u64;
    while reauths < 10 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "only {reauths} re-authentications in 90 s"
        );
        i += 1;
        if round(&client, i).await {
            ok += 1;
        } else {
            failed += 1;
        }
        while let Ok(ev) = events.try_recv() {
            match ev {
                TokenEvent::ConnectionReauthenticated { connection_id, .. }
                    if connection_id == reauth.id() =>
                {
                    reauths += 1;
                }
                TokenEvent::ReauthenticationFailed { .. } | TokenEvent::Reconnected { .. } => {
                    panic!("{ev:?}")
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failed, 0, "{failed} of {} rounds failed", ok + failed);
    assert!(ok > 100, "only {ok} rounds");
    assert_eq!(
        emulator.stats().closed_at_expiry.load(Ordering::Relaxed),
        0,
        "the gateway had to close fred's connection at expiry"
    );
    assert_eq!(
        emulator
            .stats()
            .connections_accepted
            .load(Ordering::Relaxed),
        1,
        "fred reconnected"
    );
    eprintln!(
        "fred: {ok} rounds, {reauths} re-AUTHs in {:?}",
        started.elapsed()
    );
    drop(reauth);
    client.quit().await.unwrap();
    emulator.shutdown().await;
}

#[tokio::test]
async fn fred_with_its_own_fixed_interval_stays_authenticated() {
    let lifetime = Duration::from_secs(3);
    let emulator = emulator(lifetime).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut config =
        redis_entra::connect::fred::config(&connect_options(&emulator), &manager).unwrap();
    // fred's model: re-send AUTH with the current token every quarter lifetime.
    config.credential_provider = Some(std::sync::Arc::new(
        EntraFredCredentials::new(manager.clone())
            .with_refresh_interval(Some(fixed_refresh_interval(lifetime))),
    ));
    let client = Builder::from_config(config).build().unwrap();
    client.init().await.unwrap();

    let started = Instant::now();
    let first = manager.current().unwrap().generation();
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut i = 0u64;
    // Six rotations (9 s): well past the first token's deadline (3 s + the gateway's 2 s skew).
    while manager.current().unwrap().generation() < first + 6 {
        assert!(started.elapsed() < Duration::from_secs(60));
        i += 1;
        if round(&client, i).await {
            ok += 1;
        } else {
            failed += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failed, 0, "{failed} of {} rounds failed", ok + failed);
    assert_eq!(
        emulator.stats().closed_at_expiry.load(Ordering::Relaxed),
        0,
        "the gateway had to close fred's connection at expiry"
    );
    client.quit().await.unwrap();
    emulator.shutdown().await;
}

#[tokio::test]
async fn fred_is_reconnected_before_expiry_when_reauth_keeps_failing() {
    let lifetime = Duration::from_secs(4);
    let emulator = emulator(lifetime).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let client = builder(&connect_options(&emulator), &manager)
        .unwrap()
        .build()
        .unwrap();
    client.init().await.unwrap();
    let reauth = keep_authenticated(&client, manager.clone()).unwrap();
    emulator.faults().set_refuse_reauth(true);

    let started = Instant::now();
    let (mut ok, mut failed, mut refused, mut reconnects) = (0u64, 0u64, 0u32, 0u32);
    let mut i = 0u64;
    while started.elapsed() < lifetime * 3 || reconnects < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {reconnects} reconnects in 60 s"
        );
        i += 1;
        if round(&client, i).await {
            ok += 1;
        } else {
            failed += 1;
        }
        while let Ok(ev) = events.try_recv() {
            match ev {
                TokenEvent::ReauthenticationFailed { connection_id, .. }
                    if connection_id == reauth.id() =>
                {
                    refused += 1;
                }
                TokenEvent::Reconnected { connection_id, .. } if connection_id == reauth.id() => {
                    reconnects += 1;
                }
                TokenEvent::ConnectionReauthenticated { connection_id, .. }
                    if connection_id == reauth.id() =>
                {
                    panic!("a re-AUTH succeeded with the fault on")
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failed, 0, "{failed} of {} rounds failed", ok + failed);
    assert!(refused >= 3, "{refused} refused re-AUTHs");
    assert_eq!(
        emulator.stats().closed_at_expiry.load(Ordering::Relaxed),
        0,
        "the gateway had to close fred's connection at expiry"
    );
    eprintln!(
        "fred with re-AUTH refused: {ok} rounds, {reconnects} reconnects, {refused} refusals"
    );
    drop(reauth);
    client.quit().await.unwrap();
    emulator.shutdown().await;
}
