//! `EntraPubSub`'s contract, attacked (see `connect::pubsub`'s docs): each test is named after
//! the invariant it tries to break.

mod common;

use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use redis_entra::{EntraPubSub, Protocol, TokenEvent, TokenManager};
use redis_entra_emulator::Emulator;

use common::*;

/// A publisher that signs in with an access key.
async fn publisher(emulator: &Emulator) -> redis::aio::MultiplexedConnection {
    connect_options(emulator)
        .client_with_password(None, &emulator.primary_key())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The identity loses the right to one of its channels (its access policy changed); on the
/// next connection Redis refuses that channel. The channels still allowed keep delivering; the
/// refused one is dropped and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_channel_does_not_stop_the_allowed_ones() {
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let emulator = emulator(Duration::from_secs(60)).await;
        let principal = emulator.service_principal().object_id.clone();
        let both = emulator
            .create_custom_policy(
                "both",
                "+@all ~* resetchannels &news &secret &__redis-entra:*",
            )
            .await
            .unwrap();
        emulator
            .assign_policy(&principal, both, None)
            .await
            .unwrap();
        let manager = TokenManager::new(service_principal(&emulator), quick_options());
        let mut events = manager.events();
        let mut options = connect_options(&emulator);
        options.protocol = protocol;
        let mut pubsub = EntraPubSub::connect(options, manager.clone())
            .await
            .unwrap();
        pubsub.subscribe(&["news", "secret"]).await.unwrap();
        // The policy no longer allows `secret`; the next connection is refused it.
        let news_only = emulator
            .create_custom_policy("news-only", "+@all ~* resetchannels &news &__redis-entra:*")
            .await
            .unwrap();
        emulator
            .assign_policy(&principal, news_only, None)
            .await
            .unwrap();
        // Redis itself may already have closed the subscriber (an ACL change that revokes a
        // channel disconnects its subscribers, and the policy is updated in place); cut it
        // otherwise, so that the next connection is refused `secret`.
        emulator.faults().close_all_connections();
        let mut publisher = publisher(&emulator).await;
        let got = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                let _: i64 = publisher.publish("news", "still here").await.unwrap();
                if let Ok(Some(m)) =
                    tokio::time::timeout(Duration::from_millis(200), pubsub.next()).await
                {
                    return m;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{protocol:?}: `news` stopped with the refused `secret`"));
        assert_eq!(got.channel_str(), Some("news"));
        let mut reported = false;
        while let Ok(e) = events.try_recv() {
            if let TokenEvent::SubscriptionDropped { name, .. } = e {
                assert_eq!(name, "secret");
                reported = true;
            }
        }
        assert!(reported, "{protocol:?}: the dropped channel was reported");
        emulator.shutdown().await;
    }
}

/// A consumer that stops reading: the subscription's buffers stay bounded. Past the bound the
/// connection is dropped and replaced (as Redis' own output-buffer limit would), and the gap is
/// reported; what was buffered is delivered in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_keeps_memory_bounded_and_is_told_of_the_gap() {
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let emulator = emulator(Duration::from_secs(60)).await;
        let manager = TokenManager::new(service_principal(&emulator), quick_options());
        let mut events = manager.events();
        let mut options = connect_options(&emulator);
        options.protocol = protocol;
        let mut pubsub = EntraPubSub::connect(options, manager.clone())
            .await
            .unwrap();
        pubsub.subscribe("flood").await.unwrap();
        let mut publisher = publisher(&emulator).await;
        let total = 3 * redis_entra::connect::pubsub::MESSAGE_BUFFER as u64;
        for chunk in 0..(total / 1000) {
            let mut p = redis::pipe();
            for i in 0..1000 {
                p.publish("flood", chunk * 1000 + i).ignore();
            }
            let () = p.query_async(&mut publisher).await.unwrap();
        }
        let reason = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if let Ok(TokenEvent::Reconnected { reason, .. }) = events.recv().await {
                    return reason;
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("{protocol:?}: no gap reported for a consumer that fell behind")
        });
        assert!(reason.contains("fell behind"), "{reason}");
        // What was buffered comes in order; no more than the buffers hold.
        let mut received = 0u64;
        let mut last = None;
        while let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(500), pubsub.next()).await
        {
            let n: u64 = m.payload_str().unwrap().parse().unwrap();
            assert!(
                last.is_none_or(|l| n > l),
                "out of order: {n} after {last:?}"
            );
            last = Some(n);
            received += 1;
        }
        assert!(
            received <= 2 * redis_entra::connect::pubsub::MESSAGE_BUFFER as u64 + 2,
            "{protocol:?}: {received} messages were buffered"
        );
        assert!(received > 0);
        emulator.shutdown().await;
    }
}
