//! Pub/sub against the emulator: a publisher publishes numbered messages continuously across ten
//! token rotations, and the subscriber receives every one exactly once, in order, on RESP3 (AUTH
//! in place) and on RESP2 (where the gateway, like Redis, refuses AUTH in subscribed mode, so
//! the subscription hands over to a new connection before the token expires).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::AsyncCommands;
use redis_entra::{
    EntraConnection, EntraPubSub, Protocol, SubscriptionKind, TokenEvent, TokenManager,
};

use common::*;

const ROTATIONS: u64 = 10;

/// Checks that each channel's numbers arrive exactly once, in order.
fn check(next: &mut HashMap<String, u64>, msg: redis_entra::Message) {
    assert!(!msg.possible_duplicate(), "{msg:?}");
    let channel = msg.channel_str().unwrap().to_string();
    match channel.as_str() {
        "numbers" => assert_eq!(msg.kind(), SubscriptionKind::Channel),
        "pattern:x" => {
            assert_eq!(msg.kind(), SubscriptionKind::Pattern);
            assert_eq!(msg.pattern(), Some(&b"pattern:*"[..]));
        }
        other => panic!("a message on {other}"),
    }
    let n: u64 = msg.payload_str().unwrap().parse().unwrap();
    let expected = next.entry(channel.clone()).or_insert(n);
    assert_eq!(n, *expected, "{channel}: got {n}, expected {expected}");
    *expected += 1;
}

async fn survives_ten_rotations(protocol: Protocol) {
    let emulator = emulator(Duration::from_secs(3)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let first = manager.credentials().await.unwrap().generation();
    let mut options = connect_options(&emulator);
    options.protocol = protocol;
    let pubsub = EntraPubSub::connect(options, manager.clone())
        .await
        .unwrap();
    let id = pubsub.id();
    let (sink, mut messages) = pubsub.split();
    sink.subscribe("numbers").await.unwrap();
    sink.psubscribe("pattern:*").await.unwrap();

    // The publisher: numbered messages on two channels, one of them seen through a pattern.
    let publisher = EntraConnection::connect(connect_options(&emulator), manager.clone())
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publishing = {
        let (mut conn, stop, published) = (publisher.clone(), stop.clone(), published.clone());
        tokio::spawn(async move {
            let mut failed = 0u64;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let r: redis::RedisResult<()> = async {
                    let _: i64 = conn.publish("numbers", n).await?;
                    let _: i64 = conn.publish("pattern:x", n).await?;
                    Ok(())
                }
                .await;
                match r {
                    Ok(()) => published.store(n, Ordering::Relaxed),
                    Err(e) => {
                        failed += 1;
                        eprintln!("publish {n}: {e}");
                        n -= 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            failed
        })
    };

    let mut next: HashMap<String, u64> = HashMap::new();
    let started = Instant::now();
    let (mut handovers, mut reconnects) = (0u64, 0u64);
    let mut took = Vec::new();
    let rotated = tokio::time::timeout(Duration::from_secs(120), async {
        while handovers < ROTATIONS || manager.current().unwrap().generation() < first + ROTATIONS {
            tokio::select! {
                msg = messages.next() => check(&mut next, msg.unwrap()),
                ev = events.recv() => match ev.unwrap() {
                    TokenEvent::ConnectionReauthenticated { connection_id, took: t, .. }
                        if connection_id == id =>
                    {
                        handovers += 1;
                        took.push(t);
                    }
                    TokenEvent::Reconnected { connection_id, reason } => {
                        eprintln!("connection {connection_id} reconnected: {reason}");
                        reconnects += 1;
                    }
                    _ => {}
                },
            }
        }
    })
    .await;
    assert!(
        rotated.is_ok(),
        "only {handovers} re-authentications in 120 s"
    );
    stop.store(true, Ordering::Relaxed);
    let failed_publishes = publishing.await.unwrap();
    let last = published.load(Ordering::Relaxed);
    // Every number up to the last one published arrives.
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while next.get("numbers") != Some(&(last + 1)) || next.get("pattern:x") != Some(&(last + 1))
        {
            check(&mut next, messages.next().await.unwrap());
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "not every message arrived: {next:?}, last {last}"
    );
    took.sort();
    eprintln!(
        "{protocol:?}: {last} messages per channel, {handovers} re-authentications in {:?}; median {:?}, max {:?}",
        started.elapsed(),
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert_eq!(failed_publishes, 0);
    assert!(last > 500, "only {last} messages published");
    assert_eq!(reconnects, 0, "no connection was lost");
    assert_eq!(
        emulator.stats().closed_at_expiry.load(Ordering::Relaxed),
        0,
        "no subscriber connection was left to expire"
    );
    drop(sink);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp3_pubsub_reauthenticates_in_place_across_ten_rotations() {
    survives_ten_rotations(Protocol::Resp3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp2_pubsub_hands_over_before_expiry_across_ten_rotations() {
    survives_ten_rotations(Protocol::Resp2).await;
}

async fn a_lost_connection_is_replaced_and_resubscribed(protocol: Protocol) {
    let emulator = emulator(Duration::from_secs(3600)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let mut options = connect_options(&emulator);
    options.protocol = protocol;
    let mut pubsub = EntraPubSub::connect(options, manager.clone())
        .await
        .unwrap();
    pubsub.subscribe("lost").await.unwrap();
    if protocol == Protocol::Resp3 {
        pubsub.ssubscribe("shard").await.unwrap();
    } else {
        assert!(pubsub.ssubscribe("shard").await.is_err());
    }
    let mut admin = EntraConnection::connect(connect_options(&emulator), manager.clone())
        .await
        .unwrap();
    // Redis drops the subscriber's backend connection; the gateway then closes the client's.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    let reconnected = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let TokenEvent::Reconnected { connection_id, .. } = events.recv().await.unwrap() {
                if connection_id == pubsub.id() {
                    return;
                }
            }
        }
    })
    .await;
    assert!(reconnected.is_ok(), "the subscription was not replaced");
    // Resubscribed: a message published now arrives.
    let _: i64 = admin.publish("lost", "after").await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), pubsub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload_str(), Some("after"));
    if protocol == Protocol::Resp3 {
        let _: i64 = redis::cmd("SPUBLISH")
            .arg("shard")
            .arg("sharded")
            .query_async(&mut admin)
            .await
            .unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(10), pubsub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(msg.kind(), SubscriptionKind::Shard);
        assert_eq!(msg.payload_str(), Some("sharded"));
    }
    // Unsubscribing works on the replacement too.
    pubsub.unsubscribe(Vec::<String>::new()).await.unwrap();
    let _: i64 = admin.publish("lost", "ignored").await.unwrap();
    pubsub.subscribe("again").await.unwrap();
    let _: i64 = admin.publish("again", "subscribed").await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), pubsub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.channel_str(), Some("again"), "{msg:?}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn resp3_a_lost_connection_is_replaced_and_resubscribed() {
    a_lost_connection_is_replaced_and_resubscribed(Protocol::Resp3).await;
}

#[tokio::test]
async fn resp2_a_lost_connection_is_replaced_and_resubscribed() {
    a_lost_connection_is_replaced_and_resubscribed(Protocol::Resp2).await;
}

/// What a subscriber without the handover marker received.
#[derive(Default)]
struct Received {
    seen: std::collections::BTreeSet<u64>,
    highest: u64,
    flagged: u64,
}

impl Received {
    fn receive(&mut self, msg: redis_entra::Message) {
        let n: u64 = msg.payload_str().unwrap().parse().unwrap();
        if msg.possible_duplicate() {
            self.flagged += 1;
            assert!(
                self.seen.contains(&n),
                "{n} was flagged but never delivered before"
            );
        } else {
            assert!(self.seen.insert(n), "{n} delivered twice without a flag");
            assert_eq!(n, self.highest + 1, "unflagged messages arrive in order");
            self.highest = n;
        }
    }
}

/// An identity that may subscribe only to `app:*` and may not publish cannot use the handover
/// marker: the handover falls back to flagging duplicates. Nothing is lost, and every message
/// received twice is flagged the second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp2_handover_without_a_marker_loses_nothing_and_flags_duplicates() {
    let emulator = emulator(Duration::from_secs(3)).await;
    let policy = emulator
        .create_custom_policy(
            "subscriber",
            "+@connection +subscribe +unsubscribe +psubscribe +punsubscribe resetchannels &app:*",
        )
        .await
        .unwrap();
    let principal = emulator.service_principal().object_id.clone();
    emulator
        .assign_policy(&principal, policy, None)
        .await
        .unwrap();
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let first = manager.credentials().await.unwrap().generation();
    let mut options = connect_options(&emulator);
    options.protocol = Protocol::Resp2;
    let pubsub = EntraPubSub::connect(options, manager.clone())
        .await
        .unwrap();
    let id = pubsub.id();
    let (sink, mut messages) = pubsub.split();
    sink.subscribe("app:numbers").await.unwrap();

    // The publisher signs in with an access key (the subscriber's identity may not publish).
    let mut publisher = connect_options(&emulator)
        .client_with_password(None, &emulator.primary_key())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publishing = {
        let (stop, published) = (stop.clone(), published.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Bursts, so that the handover's overlap is rarely empty.
                let mut burst = redis::pipe();
                for _ in 0..20 {
                    n += 1;
                    burst.publish("app:numbers", n).ignore();
                }
                let () = burst.query_async(&mut publisher).await.unwrap();
                published.store(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };

    let mut got = Received::default();
    let mut handovers = 0u64;
    let rotated = tokio::time::timeout(Duration::from_secs(60), async {
        while handovers < 3 || manager.current().unwrap().generation() < first + 3 {
            tokio::select! {
                msg = messages.next() => got.receive(msg.unwrap()),
                ev = events.recv() => match ev.unwrap() {
                    TokenEvent::ConnectionReauthenticated { connection_id, .. } if connection_id == id => handovers += 1,
                    TokenEvent::Reconnected { reason, .. } => panic!("reconnected: {reason}"),
                    _ => {}
                },
            }
        }
    })
    .await;
    assert!(rotated.is_ok(), "only {handovers} handovers in 60 s");
    stop.store(true, Ordering::Relaxed);
    publishing.await.unwrap();
    let last = published.load(Ordering::Relaxed);
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while got.highest < last {
            got.receive(messages.next().await.unwrap());
        }
    })
    .await;
    assert!(drained.is_ok(), "received up to {} of {last}", got.highest);
    assert_eq!(got.seen.len() as u64, last, "every message arrived");
    eprintln!(
        "fallback: {last} messages, {handovers} handovers, {} flagged duplicates",
        got.flagged
    );
    assert_eq!(
        emulator.stats().closed_at_expiry.load(Ordering::Relaxed),
        0,
        "the subscriber's connections were switched before expiry"
    );
    drop(sink);
    emulator.shutdown().await;
}

/// Soak regression (docs/RELIABILITY.md, "Soak"): a subscription whose connection the gateway
/// closed while no token was left resubscribes as soon as the first token after the outage
/// arrives, not after a backoff that grew during the outage (up to 2 s before the fix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_regression_a_subscription_lost_without_a_token_returns_with_the_first_new_token() {
    use redis_entra_emulator::faults::IdentityFault;
    let emulator = emulator(Duration::from_secs(3)).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let mut options = connect_options(&emulator);
    options.protocol = Protocol::Resp3;
    let pubsub = EntraPubSub::connect(options, manager.clone())
        .await
        .unwrap();
    let id = pubsub.id();
    let (sink, mut messages) = pubsub.split();
    sink.subscribe("soak").await.unwrap();
    emulator.faults().set_identity(IdentityFault::Unavailable);
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while emulator.stats().closed_at_expiry.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the gateway did not close the subscription");
    let mut failures = 0u32;
    while failures < 6 {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(TokenEvent::RefreshFailed {
                time_left: None, ..
            })) => failures += 1,
            Ok(Ok(_)) => {}
            other => panic!("expected refresh failures, got {other:?}"),
        }
    }
    let after_token = heal_and_time_reconnection(&emulator, &mut events, id).await;
    assert!(
        after_token < Duration::from_millis(500),
        "resubscribed {after_token:?} after the first new token"
    );
    // And it delivers again.
    let mut publisher = EntraConnection::connect(connect_options(&emulator), manager.clone())
        .await
        .unwrap();
    let receivers: i64 = publisher.publish("soak", "back").await.unwrap();
    assert_eq!(receivers, 1);
    let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload_str(), Some("back"));
    drop(sink);
    emulator.shutdown().await;
}
