//! The library's `EntraPubSub` against Valkey with the module, across ten token rotations: on
//! RESP3 the subscription re-authenticates in place; on RESP2 (where the server refuses `AUTH`
//! in subscribed mode) it hands over to a new connection. Every message arrives exactly once,
//! in order, and no publish fails.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use futures::StreamExt;
use redis::AsyncCommands;
use redis_entra::{EntraConnection, EntraPubSub, Protocol, TokenEvent};
use support::Server;

const ROTATIONS: u64 = 10;

/// Checks that the numbers arrive exactly once, in order.
fn check(next: &mut Option<u64>, msg: redis_entra::Message) {
    let n: u64 = msg.payload_str().unwrap_or_default().parse().unwrap_or(0);
    let expected = *next.get_or_insert(n);
    assert_eq!(n, expected, "got {n}, expected {expected}");
    *next = Some(n + 1);
}

async fn survives_ten_rotations(protocol: Protocol) -> Result<()> {
    let emulator = support::emulator(Duration::from_secs(3)).await;
    let server = Server::for_emulator(&emulator, &[])?;
    server.create_user(&emulator.service_principal().object_id)?;
    let (front, ca) = support::tls_front(server.port).await?;
    let (manager, mut options) = support::library(&emulator, front, ca)?;
    let mut events = manager.events();
    let first = manager.credentials().await?.generation();
    let publisher = EntraConnection::connect(options.clone(), manager.clone()).await?;
    options.protocol = protocol;
    let pubsub = EntraPubSub::connect(options, manager.clone()).await?;
    let id = pubsub.id();
    let (sink, mut messages) = pubsub.split();
    sink.subscribe("numbers").await?;

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publishing = {
        let (mut conn, stop, published) = (publisher.clone(), stop.clone(), published.clone());
        tokio::spawn(async move {
            let (mut n, mut failed) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match conn.publish::<_, _, i64>("numbers", n).await {
                    Ok(_) => published.store(n, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("publish {n}: {e}");
                        failed += 1;
                        n -= 1;
                    }
                }
                // Paces the publisher (not a wait for a state).
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failed
        })
    };
    let mut next: Option<u64> = None;
    let mut handovers = 0u64;
    let rotated = tokio::time::timeout(Duration::from_secs(120), async {
        while handovers < ROTATIONS || manager.current().map_or(0, |c| c.generation()) < first + ROTATIONS {
            tokio::select! {
                msg = messages.next() => check(&mut next, msg.expect("the subscription goes on")),
                ev = events.recv() => if let Ok(TokenEvent::ConnectionReauthenticated { connection_id, .. }) = ev {
                    if connection_id == id {
                        handovers += 1;
                    }
                },
            }
        }
    })
    .await;
    ensure!(
        rotated.is_ok(),
        "only {handovers} re-authentications in 120 s"
    );
    stop.store(true, Ordering::Relaxed);
    let failed = publishing.await?;
    let last = published.load(Ordering::Relaxed);
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while next != Some(last + 1) {
            check(
                &mut next,
                messages.next().await.expect("the subscription goes on"),
            );
        }
    })
    .await;
    ensure!(
        drained.is_ok(),
        "not every message arrived: next {next:?}, last {last}"
    );
    ensure!(failed == 0, "{failed} publishes failed");
    ensure!(last > 100, "only {last} messages");
    ensure!(server.stat("refused")? == 0, "a token was refused");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn resp3_pubsub_reauthenticates_in_place_across_ten_rotations() -> Result<()> {
    survives_ten_rotations(Protocol::Resp3).await
}

#[tokio::test(flavor = "multi_thread")]
async fn resp2_pubsub_hands_over_across_ten_rotations() -> Result<()> {
    survives_ten_rotations(Protocol::Resp2).await
}
