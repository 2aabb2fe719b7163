//! Every kind of redis-entra connection under the emulator's injected faults: connections closed
//! at random (as Azure's proxy drops them on a failover), a backend restart, and tokens issued
//! for the wrong audience. Real emulator, real TLS, a real `redis-server`.
//!
//! Each scenario drives rounds (a `SET` then a `GET` of a fresh value, or a publish and its
//! delivery) through one kind of connection while the fault is on, counts the rounds that
//! failed, then requires a round to succeed within [`RECOVERY`] once the fault is off. A round
//! cut in flight fails with the I/O error redis-rs gives: those are counted and printed, not
//! hidden. Run with `--nocapture` to see the figures.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, ensure, Result};
use futures::StreamExt;
use redis::AsyncCommands;
use redis_entra::{
    BlockingTokenManager, EntraAsyncConnectionManager, EntraClusterConnection, EntraConnection,
    EntraConnectionManager, EntraPubSub, EntraSyncConnection, Protocol, TokenEvent, TokenManager,
};
use redis_entra_emulator::faults::IdentityFault;
use redis_entra_emulator::Emulator;

use common::*;

/// How long a fault stays on.
const FAULT_FOR: Duration = Duration::from_secs(6);
/// Closes per connection per second while random closes are on (a mean life of 0.5 s; the
/// chance that a connection kind sees no close in [`FAULT_FOR`] is e^-12).
const CLOSE_RATE: f64 = 2.0;
/// The bound on recovery once a fault is over.
const RECOVERY: Duration = Duration::from_secs(30);
/// The bound on one round.
const ROUND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the backend stays down in a restart.
const DOWN_FOR: Duration = Duration::from_secs(1);

type RoundFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;
/// One round of traffic through a connection, numbered.
type Round = Box<dyn FnMut(u64) -> RoundFuture + Send>;

/// What happened to the rounds of one scenario.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    failed: u64,
    /// The first few errors, for the report.
    errors: Vec<String>,
    /// The longest time from a failed round to the next successful one.
    worst_outage: Duration,
    failing_since: Option<Instant>,
    next: u64,
}

impl Tally {
    fn record(&mut self, result: Result<()>, started: Instant) {
        match result {
            Ok(()) => {
                self.ok += 1;
                if let Some(since) = self.failing_since.take() {
                    self.worst_outage = self.worst_outage.max(since.elapsed());
                }
            }
            Err(e) => {
                self.failed += 1;
                if self.errors.len() < 3 {
                    self.errors.push(format!("{e:#}"));
                }
                self.failing_since.get_or_insert(started);
            }
        }
    }

    /// Runs rounds one after another for `how_long`.
    async fn drive(&mut self, round: &mut Round, how_long: Duration) {
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            self.one(round).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn one(&mut self, round: &mut Round) -> bool {
        self.next += 1;
        let started = Instant::now();
        let result = match tokio::time::timeout(ROUND_TIMEOUT, round(self.next)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("no answer in {ROUND_TIMEOUT:?}")),
        };
        let ok = result.is_ok();
        self.record(result, started);
        ok
    }

    /// Rounds until one succeeds; how long that took. Fails the test after [`RECOVERY`].
    async fn recover(&mut self, round: &mut Round, what: &str) -> Duration {
        let started = Instant::now();
        while !self.one(round).await {
            assert!(
                started.elapsed() < RECOVERY,
                "{what}: no successful round {RECOVERY:?} after the fault ended; errors: {:?}",
                self.errors
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        started.elapsed()
    }
}

fn closed_by_fault(emulator: &Emulator) -> u64 {
    emulator.stats().closed_by_fault.load(Ordering::Relaxed)
}

/// Random closes on, rounds for [`FAULT_FOR`], off, recovery. Asserts the fault hit the
/// connection kind and that it recovered; prints the figures.
async fn under_random_closes(emulator: &Emulator, what: &str, mut round: Round) {
    let mut tally = Tally::default();
    assert!(
        tally.one(&mut round).await,
        "{what}: the first round failed"
    );
    let before = closed_by_fault(emulator);
    emulator.faults().set_random_close(CLOSE_RATE).unwrap();
    tally.drive(&mut round, FAULT_FOR).await;
    emulator.faults().set_random_close(0.0).unwrap();
    let closes = closed_by_fault(emulator) - before;
    let recovered_in = tally.recover(&mut round, what).await;
    // And it keeps working.
    for _ in 0..5 {
        assert!(
            tally.one(&mut round).await,
            "{what}: a round failed after recovery"
        );
    }
    eprintln!(
        "FIGURES random-close {what}: {closes} closes injected in {FAULT_FOR:?}; rounds {} ok, \
         {} failed; longest outage {:?}; recovered {recovered_in:?} after the fault ended; \
         first errors: {:?}",
        tally.ok, tally.failed, tally.worst_outage, tally.errors
    );
    assert!(
        closes > 0,
        "{what}: no connection was closed: nothing was tested"
    );
}

/// A backend restart (down for [`DOWN_FOR`]) while rounds run, then recovery. Prints the
/// figures.
async fn across_a_backend_restart(emulator: &Emulator, what: &str, mut round: Round) {
    let mut tally = Tally::default();
    assert!(
        tally.one(&mut round).await,
        "{what}: the first round failed"
    );
    let started = Instant::now();
    let (restarted, ()) = tokio::join!(
        emulator.restart_backend(DOWN_FOR),
        tally.drive(&mut round, DOWN_FOR + Duration::from_secs(2)),
    );
    restarted.unwrap();
    let recovered_in = tally.recover(&mut round, what).await;
    for _ in 0..5 {
        assert!(
            tally.one(&mut round).await,
            "{what}: a round failed after recovery"
        );
    }
    eprintln!(
        "FIGURES backend-restart {what}: rounds {} ok, {} failed; longest outage {:?} (the \
         backend was down {DOWN_FOR:?}); a round succeeded {recovered_in:?} after the drive, \
         {:?} after the restart began; first errors: {:?}",
        tally.ok,
        tally.failed,
        tally.worst_outage,
        started.elapsed(),
        tally.errors
    );
}

// --- the kinds of connection, as rounds ------------------------------------------------------

async fn multiplexed(emulator: &Emulator) -> Round {
    let manager = TokenManager::new(service_principal(emulator), quick_options());
    multiplexed_with(emulator, manager, Protocol::Resp2).await
}

async fn multiplexed_with(emulator: &Emulator, manager: TokenManager, protocol: Protocol) -> Round {
    let mut options = connect_options(emulator);
    options.protocol = protocol;
    let conn = EntraConnection::connect(options, manager).await.unwrap();
    let key = format!("faults:mux:{}", conn.id());
    Box::new(move |i| {
        let (mut conn, key) = (conn.clone(), key.clone());
        Box::pin(async move {
            let _: () = conn.set(&key, i).await?;
            let v: u64 = conn.get(&key).await?;
            ensure!(v == i, "read {v}, wrote {i}");
            Ok(())
        })
    })
}

async fn bb8_pool(emulator: &Emulator) -> Round {
    let manager = TokenManager::new(service_principal(emulator), quick_options());
    let pool = bb8::Pool::builder()
        .max_size(2)
        .build(EntraAsyncConnectionManager::new(
            connect_options(emulator),
            manager,
        ))
        .await
        .unwrap();
    Box::new(move |i| {
        let pool = pool.clone();
        Box::pin(async move {
            let mut conn = pool.get().await.map_err(|e| anyhow!("checkout: {e}"))?;
            let _: () = conn.set("faults:bb8", i).await?;
            let v: u64 = conn.get("faults:bb8").await?;
            ensure!(v == i, "read {v}, wrote {i}");
            Ok(())
        })
    })
}

/// A blocking round on a blocking connection behind a mutex, run on Tokio's blocking pool.
fn blocking_round<C, F>(conn: Arc<Mutex<C>>, body: F) -> Round
where
    C: Send + 'static,
    F: Fn(&mut C, u64) -> Result<()> + Send + Sync + Clone + 'static,
{
    Box::new(move |i| {
        let (conn, body) = (conn.clone(), body.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                body(&mut conn, i)
            })
            .await?
        })
    })
}

async fn sync_connection(emulator: &Emulator) -> Round {
    let (credential, options) = (service_principal(emulator), connect_options(emulator));
    let conn = tokio::task::spawn_blocking(move || {
        let tokens = BlockingTokenManager::new(credential, quick_options()).unwrap();
        EntraSyncConnection::connect(options, tokens).unwrap()
    })
    .await
    .unwrap();
    blocking_round(Arc::new(Mutex::new(conn)), |conn, i| {
        use redis::Commands;
        let _: () = conn.set("faults:sync", i)?;
        let v: u64 = conn.get("faults:sync")?;
        ensure!(v == i, "read {v}, wrote {i}");
        Ok(())
    })
}

async fn r2d2_pool(emulator: &Emulator) -> Round {
    let (credential, options) = (service_principal(emulator), connect_options(emulator));
    let pool = tokio::task::spawn_blocking(move || {
        let tokens = BlockingTokenManager::new(credential, quick_options()).unwrap();
        r2d2::Pool::builder()
            .max_size(2)
            .connection_timeout(ROUND_TIMEOUT)
            .build(EntraConnectionManager::new(options, tokens))
            .unwrap()
    })
    .await
    .unwrap();
    blocking_round(Arc::new(Mutex::new(pool)), |pool, i| {
        use redis::Commands;
        let mut conn = pool.get()?;
        let _: () = conn.set("faults:r2d2", i)?;
        let v: u64 = conn.get("faults:r2d2")?;
        ensure!(v == i, "read {v}, wrote {i}");
        Ok(())
    })
}

/// A round publishes `i` (on an `EntraConnection`) and waits for the subscriber to receive it.
async fn pubsub(emulator: &Emulator, protocol: Protocol) -> Round {
    let manager = TokenManager::new(service_principal(emulator), quick_options());
    let mut options = connect_options(emulator);
    options.protocol = protocol;
    let subscriber = EntraPubSub::connect(options, manager.clone())
        .await
        .unwrap();
    subscriber.subscribe("faults:channel").await.unwrap();
    let subscriber = Arc::new(tokio::sync::Mutex::new(subscriber));
    let publisher = EntraConnection::connect(connect_options(emulator), manager)
        .await
        .unwrap();
    Box::new(move |i| {
        let (subscriber, mut publisher) = (subscriber.clone(), publisher.clone());
        Box::pin(async move {
            let receivers: i64 = publisher.publish("faults:channel", i).await?;
            ensure!(
                receivers > 0,
                "published {i} to nobody (not subscribed yet)"
            );
            let mut subscriber = subscriber.lock().await;
            let wanted = i.to_string();
            let arrived = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(msg) = subscriber.next().await {
                    if msg.payload() == wanted.as_bytes() {
                        return true;
                    }
                }
                false
            })
            .await;
            ensure!(
                matches!(arrived, Ok(true)),
                "message {i} did not arrive in 2 s ({arrived:?})"
            );
            Ok(())
        })
    })
}

// --- random closes ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplexed_connection_recovers_from_random_closes() {
    let emulator = emulator(Duration::from_secs(300)).await;
    for protocol in [Protocol::Resp2, Protocol::Resp3] {
        let manager = TokenManager::new(service_principal(&emulator), quick_options());
        let round = multiplexed_with(&emulator, manager, protocol).await;
        under_random_closes(&emulator, &format!("EntraConnection {protocol:?}"), round).await;
    }
    emulator.shutdown().await;
}

/// Rounds over keys on every node of the cluster.
async fn cluster(emulator: &Emulator) -> Round {
    let manager = TokenManager::new(service_principal(emulator), quick_options());
    let conn = EntraClusterConnection::connect(connect_options(emulator), manager)
        .await
        .unwrap();
    // Keys in slots owned by each of the three nodes (hash tags pick the slots).
    let keys: Vec<String> = ["{a}", "{b}", "{c}", "{d}", "{e}"]
        .iter()
        .map(|tag| format!("faults:cluster:{tag}"))
        .collect();
    Box::new(move |i| {
        let (mut conn, keys) = (conn.clone(), keys.clone());
        Box::pin(async move {
            for key in &keys {
                let _: () = conn.set(key, i).await?;
                let v: u64 = conn.get(key).await?;
                ensure!(v == i, "{key}: read {v}, wrote {i}");
            }
            Ok(())
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_connection_recovers_from_random_closes_and_a_node_restart() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    let emulator = Emulator::start(redis_entra_emulator::EmulatorConfig {
        token_lifetime: Duration::from_secs(300),
        cluster: Some(3),
        ..Default::default()
    })
    .await
    .expect("the emulator starts a cluster");
    let round = cluster(&emulator).await;
    under_random_closes(&emulator, "EntraClusterConnection", round).await;

    // A node restart (the cluster's counterpart of a backend restart).
    let mut round = cluster(&emulator).await;
    let mut tally = Tally::default();
    assert!(tally.one(&mut round).await);
    let started = Instant::now();
    let (restarted, ()) = tokio::join!(
        emulator.restart_node(1),
        tally.drive(&mut round, Duration::from_secs(3)),
    );
    restarted.unwrap();
    let recovered_in = tally.recover(&mut round, "EntraClusterConnection").await;
    eprintln!(
        "FIGURES node-restart EntraClusterConnection: rounds {} ok, {} failed; longest outage \
         {:?}; a round succeeded {recovered_in:?} after the drive, {:?} after the restart \
         began; first errors: {:?}",
        tally.ok,
        tally.failed,
        tally.worst_outage,
        started.elapsed(),
        tally.errors
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bb8_pool_recovers_from_random_closes() {
    let emulator = emulator(Duration::from_secs(300)).await;
    let round = bb8_pool(&emulator).await;
    under_random_closes(&emulator, "bb8 pool", round).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_connection_recovers_from_random_closes() {
    let emulator = emulator(Duration::from_secs(300)).await;
    let round = sync_connection(&emulator).await;
    under_random_closes(&emulator, "EntraSyncConnection", round).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2d2_pool_recovers_from_random_closes() {
    let emulator = emulator(Duration::from_secs(300)).await;
    let round = r2d2_pool(&emulator).await;
    under_random_closes(&emulator, "r2d2 pool", round).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_recovers_from_random_closes() {
    let emulator = emulator(Duration::from_secs(300)).await;
    for protocol in [Protocol::Resp3, Protocol::Resp2] {
        let round = pubsub(&emulator, protocol).await;
        under_random_closes(&emulator, &format!("EntraPubSub {protocol:?}"), round).await;
    }
    emulator.shutdown().await;
}

// --- a backend restart ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_recovers_from_a_backend_restart() {
    let emulator = emulator(Duration::from_secs(300)).await;
    let kinds: Vec<(&str, Round)> = vec![
        ("EntraConnection", multiplexed(&emulator).await),
        ("bb8 pool", bb8_pool(&emulator).await),
        ("EntraSyncConnection", sync_connection(&emulator).await),
        ("r2d2 pool", r2d2_pool(&emulator).await),
        (
            "EntraPubSub Resp3",
            pubsub(&emulator, Protocol::Resp3).await,
        ),
        (
            "EntraPubSub Resp2",
            pubsub(&emulator, Protocol::Resp2).await,
        ),
    ];
    for (what, round) in kinds {
        across_a_backend_restart(&emulator, what, round).await;
    }
    let restarts = emulator.stats().backend_restarts.load(Ordering::Relaxed);
    assert_eq!(restarts, 6);
    emulator.shutdown().await;
}

// --- tokens for the wrong audience ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_audience_tokens_are_reported_and_the_old_token_keeps_serving() {
    let lifetime = Duration::from_secs(10);
    let emulator = emulator(lifetime).await;
    let manager = TokenManager::new(service_principal(&emulator), quick_options());
    let mut events = manager.events();
    let mut round = multiplexed_with(&emulator, manager.clone(), Protocol::Resp2).await;
    let mut tally = Tally::default();
    assert!(tally.one(&mut round).await);
    let old_expiry = manager.current().map(|c| c.expires_on()).expect("a token");
    emulator
        .faults()
        .set_identity(IdentityFault::WrongAudience {
            audience: "https://management.azure.com/".into(),
        });

    // The next token is refused by the gateway: the library says so, and keeps using the
    // connection authenticated with the old one while that is valid.
    let deadline = Instant::now() + lifetime * 2;
    let mut refusal = None;
    while refusal.is_none() {
        assert!(Instant::now() < deadline, "no ReauthenticationFailed event");
        assert!(
            tally.one(&mut round).await,
            "a round failed: {:?}",
            tally.errors
        );
        while let Ok(event) = events.try_recv() {
            if let TokenEvent::ReauthenticationFailed { error, .. } = event {
                refusal = Some(error);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refusal = refusal.unwrap_or_default();
    assert!(
        refusal.contains("WRONGPASS"),
        "the event does not say WRONGPASS: {refusal}"
    );
    // Until shortly before the old token expires, every round still succeeds.
    let serving_until = old_expiry - Duration::from_millis(500);
    let mut rounds_on_old_token = 0;
    while SystemTime::now() < serving_until {
        assert!(
            tally.one(&mut round).await,
            "a round failed while the old token was valid: {:?}",
            tally.errors
        );
        rounds_on_old_token += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Healed: good tokens again; the connection recovers within the bound.
    emulator.faults().set_identity(IdentityFault::None);
    let healed = Instant::now();
    let failed_before = tally.failed;
    let recovered_in = tally.recover(&mut round, "wrong audience").await;
    // Recovered on a good token: a later refresh re-authenticates in place.
    let deadline = Instant::now() + lifetime * 2;
    let mut reauthenticated = false;
    while !reauthenticated {
        assert!(
            Instant::now() < deadline,
            "no successful re-AUTH after the fault ended"
        );
        tally.one(&mut round).await;
        while let Ok(event) = events.try_recv() {
            reauthenticated |= matches!(event, TokenEvent::ConnectionReauthenticated { .. });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "FIGURES wrong-audience EntraConnection: refusal event {refusal:?}; {rounds_on_old_token} \
         rounds on the old token after it, all ok; after healing: {} rounds failed, first \
         success {recovered_in:?} after the heal, re-AUTH in place {:?} after the heal; \
         total {} ok / {} failed",
        tally.failed - failed_before,
        healed.elapsed(),
        tally.ok,
        tally.failed,
    );
    emulator.shutdown().await;
}
