//! `EntraClusterConnection` against the emulator's 3-node cluster (OSS cluster policy) with
//! 3-second tokens: rotations on every node, a slot migration and a node restart, all under
//! traffic.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use redis_entra::{EntraClusterConnection, TokenEvent, TokenManager};
use redis_entra_emulator::cluster::key_slot;
use redis_entra_emulator::stats::Stats;
use redis_entra_emulator::{Emulator, EmulatorConfig};
use tokio::sync::watch;

/// Generous bound on anything the tests wait for.
const WAIT: Duration = Duration::from_secs(60);

async fn cluster_emulator(lifetime: Duration) -> Emulator {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
    Emulator::start(EmulatorConfig {
        token_lifetime: lifetime,
        cluster: Some(3),
        ..EmulatorConfig::default()
    })
    .await
    .expect("the emulator starts a cluster")
}

async fn connect(emulator: &Emulator) -> (EntraClusterConnection, TokenManager) {
    let manager = TokenManager::new(common::service_principal(emulator), common::quick_options());
    let conn = EntraClusterConnection::connect(common::connect_options(emulator), manager.clone())
        .await
        .expect("the cluster connection comes up");
    (conn, manager)
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key:{i}")).collect()
}

fn value_of(key: &str) -> String {
    format!("value of {key}")
}

/// Which nodes own `keys`.
async fn owners(emulator: &Emulator, keys: &[String]) -> HashSet<usize> {
    let cluster = emulator.cluster().expect("cluster mode");
    let mut owners = HashSet::new();
    for key in keys {
        owners.insert(cluster.slot_owner(key_slot(key.as_bytes())).await.unwrap());
    }
    owners
}

/// Waits until the manager has handed out token generation `generation`.
async fn wait_for_generation(
    events: &mut tokio::sync::broadcast::Receiver<TokenEvent>,
    generation: u64,
) {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(TokenEvent::Refreshed { generation: g, .. }) if g >= generation => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("token events ended: {e}"),
            }
        }
    })
    .await
    .expect("the token rotates");
}

/// Reads `keys` in a loop (expecting `value of KEY`) until stopped, counting rounds and
/// recording failures.
struct Readers {
    stop: Arc<AtomicBool>,
    rounds: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Readers {
    fn start(mut conn: EntraClusterConnection, keys: Vec<String>) -> Readers {
        let stop = Arc::new(AtomicBool::new(false));
        let (rounds_tx, rounds) = watch::channel(0u64);
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut failures = Vec::new();
            while !s.load(Ordering::SeqCst) {
                for key in &keys {
                    match conn.get::<_, Option<String>>(key).await {
                        Ok(Some(v)) if v == value_of(key) => {}
                        other => failures.push(format!("GET {key}: {other:?}")),
                    }
                }
                rounds_tx.send_modify(|r| *r += 1);
            }
            failures
        });
        Readers { stop, rounds, task }
    }

    /// Waits for `more` complete rounds from now.
    async fn wait_rounds(&mut self, more: u64) {
        let target = *self.rounds.borrow() + more;
        tokio::time::timeout(WAIT, self.rounds.wait_for(|r| *r >= target))
            .await
            .expect("the traffic keeps going")
            .expect("the traffic task is alive");
    }

    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the traffic task ends")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_connection_follows_ten_token_rotations_without_a_failed_command() {
    let emulator = cluster_emulator(Duration::from_secs(3)).await;
    let (mut conn, manager) = connect(&emulator).await;
    let keys = keys(200);
    for key in &keys {
        let _: () = conn.set(key, value_of(key)).await.unwrap();
    }
    assert_eq!(
        owners(&emulator, &keys).await.len(),
        3,
        "keys on every node"
    );

    let mut events = manager.events();
    let first = manager.current().expect("a token").generation();
    let mut readers = Readers::start(conn.clone(), keys.clone());
    // Writers too: counters spread over every slot range.
    let writes = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let stop_writes = Arc::new(AtomicBool::new(false));
    let writer = {
        let (mut conn, writes, stop) = (conn.clone(), writes.clone(), stop_writes.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("counter:{}", n % 64);
                match conn.set::<_, _, ()>(&key, n).await {
                    Ok(()) => writes.lock().unwrap().push((key, n)),
                    Err(e) => failures.push(format!("SET {key}: {e}")),
                }
                n += 1;
            }
            failures
        })
    };
    for rotation in 1..=10 {
        wait_for_generation(&mut events, first + rotation).await;
        // Traffic went through on the new token.
        readers.wait_rounds(1).await;
    }
    let read_failures = readers.stop().await;
    stop_writes.store(true, Ordering::SeqCst);
    let write_failures = writer.await.unwrap();
    assert!(read_failures.is_empty(), "{read_failures:?}");
    assert!(write_failures.is_empty(), "{write_failures:?}");

    // The last write of each counter is there.
    let mut last = std::collections::HashMap::new();
    for (key, n) in writes.lock().unwrap().iter() {
        last.insert(key.clone(), *n);
    }
    assert_eq!(
        owners(&emulator, &last.keys().cloned().collect::<Vec<_>>())
            .await
            .len(),
        3
    );
    for (key, n) in last {
        let got: u64 = conn.get(&key).await.unwrap();
        assert_eq!(got, n, "{key}");
    }
    // Re-authenticated in place: no node connection was closed for an expired token.
    assert_eq!(Stats::get(&emulator.stats().closed_at_expiry), 0);
    assert_eq!(Stats::get(&emulator.stats().auth_failed), 0);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migration_under_traffic_fails_no_read() {
    let emulator = cluster_emulator(Duration::from_secs(3)).await;
    let cluster = emulator.cluster().expect("cluster").clone();
    let (mut conn, manager) = connect(&emulator).await;
    let mut traffic_keys: Vec<String> = (0..200).map(|i| format!("{{mig}}:{i}")).collect();
    traffic_keys.extend(keys(60));
    for key in &traffic_keys {
        let _: () = conn.set(key, value_of(key)).await.unwrap();
    }
    let slot = key_slot(b"mig");
    let from = cluster.slot_owner(slot).await.unwrap();
    let to = (from + 1) % 3;

    let mut events = manager.events();
    let mut readers = Readers::start(conn.clone(), traffic_keys.clone());
    readers.wait_rounds(1).await;
    let moved = emulator.migrate_slot(slot, from, to).await.unwrap();
    assert_eq!(moved, 200);
    assert_eq!(cluster.slot_owner(slot).await.unwrap(), to);
    readers.wait_rounds(2).await;
    // And back, across a token rotation: the node connections opened after the redirections
    // re-authenticate too.
    let generation = manager.current().expect("a token").generation();
    wait_for_generation(&mut events, generation + 1).await;
    emulator.migrate_slot(slot, to, from).await.unwrap();
    wait_for_generation(&mut events, generation + 2).await;
    readers.wait_rounds(2).await;
    let failures = readers.stop().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(Stats::get(&emulator.stats().closed_at_expiry), 0);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_loses_no_acknowledged_write_and_the_client_recovers() {
    let emulator = cluster_emulator(Duration::from_secs(3)).await;
    let cluster = emulator.cluster().expect("cluster").clone();
    let (mut conn, _manager) = connect(&emulator).await;

    // A writer of distinct keys, spread over every slot range, recording what was acknowledged.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let (count_tx, mut count) = watch::channel(0u64);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (mut conn, acked, stop) = (conn.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut failed = 0u64;
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("write:{n}");
                match conn.set::<_, _, ()>(&key, value_of(&key)).await {
                    Ok(()) => {
                        acked.lock().unwrap().push(key);
                        count_tx.send_modify(|c| *c += 1);
                    }
                    Err(_) => failed += 1,
                }
                n += 1;
            }
            failed
        })
    };
    let wait_acks = |count: &mut watch::Receiver<u64>, more: u64| {
        let target = *count.borrow() + more;
        let mut count = count.clone();
        async move {
            tokio::time::timeout(WAIT, count.wait_for(|c| *c >= target))
                .await
                .expect("writes are acknowledged")
                .expect("the writer is alive");
        }
    };
    wait_acks(&mut count, 200).await;
    let victim = {
        let keys = acked.lock().unwrap().clone();
        cluster
            .slot_owner(key_slot(keys[0].as_bytes()))
            .await
            .unwrap()
    };
    emulator.restart_node(victim).await.unwrap();
    // The client recovers: writes flow again, on every node (the victim's included).
    wait_acks(&mut count, 300).await;
    stop.store(true, Ordering::SeqCst);
    let failed = writer.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    assert_eq!(owners(&emulator, &acked).await.len(), 3);
    let recent: Vec<String> = acked[acked.len() - 100..].to_vec();
    assert!(
        owners(&emulator, &recent).await.contains(&victim),
        "writes reach the restarted node again"
    );
    for key in &acked {
        let value: Option<String> = conn.get(key).await.unwrap();
        assert_eq!(value.as_deref(), Some(value_of(key).as_str()), "{key}");
    }
    eprintln!(
        "{} acknowledged writes all present; {failed} writes failed during the restart",
        acked.len()
    );
    emulator.shutdown().await;
}

/// A re-`AUTH` the server refuses (redis-rs then stops re-authenticating that node connection
/// for good) is retried by the connection's own task until it succeeds: once access is back,
/// every node connection is authenticated again, before its token expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reauth_is_retried_until_every_node_accepts_the_token() {
    let emulator = cluster_emulator(Duration::from_secs(3)).await;
    let (mut conn, manager) = connect(&emulator).await;
    let keys = keys(60);
    for key in &keys {
        let _: () = conn.set(key, value_of(key)).await.unwrap();
    }
    assert_eq!(
        owners(&emulator, &keys).await.len(),
        3,
        "keys on every node"
    );
    let stats = emulator.stats().clone();
    let oid = emulator.service_principal().object_id.clone();
    let policy = emulator
        .directory()
        .policy_of(&oid)
        .expect("the service principal has a policy");

    let mut events = manager.events();
    let mut readers = Readers::start(conn.clone(), keys.clone());
    readers.wait_rounds(1).await;
    // Refuse the next token: every node's re-AUTH gets WRONGPASS (the connections keep working
    // on their old token meanwhile).
    emulator.remove_policy_assignment(&oid);
    let id = conn.id();
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(TokenEvent::ReauthenticationFailed { connection_id, .. })
                    if connection_id == id =>
                {
                    return
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("token events ended: {e}"),
            }
        }
    })
    .await
    .expect("the re-AUTH is refused");
    assert!(Stats::get(&stats.auth_failed) >= 3, "refused on every node");
    // Access is back: the retry gets every node connection in again.
    emulator.directory().assign(&oid, policy);
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(TokenEvent::ConnectionReauthenticated { connection_id, .. })
                    if connection_id == id =>
                {
                    return
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("token events ended: {e}"),
            }
        }
    })
    .await
    .expect("the retried re-AUTH succeeds");

    // Then two more rotations with traffic and without a failure or a connection closed for
    // an expired token.
    let generation = manager.current().expect("a token").generation();
    wait_for_generation(&mut events, generation + 2).await;
    readers.wait_rounds(1).await;
    let failures = readers.stop().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(Stats::get(&stats.closed_at_expiry), 0);
    emulator.shutdown().await;
}

/// The user's own `ClusterClient`, with the library's provider and a guard beside it.
async fn users_cluster_client(
    emulator: &Emulator,
    manager: &TokenManager,
) -> redis::cluster_async::ClusterConnection {
    let seed = format!("rediss://localhost:{}", emulator.gateway_addr().port());
    redis::cluster::ClusterClientBuilder::new(vec![seed])
        .certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(emulator.ca_pem().as_bytes().to_vec()),
        })
        .set_credentials_provider(redis_entra::EntraCredentialsProvider::new(manager.clone()))
        .build()
        .unwrap()
        .get_async_connection()
        .await
        .expect("the cluster connection comes up")
}

/// Reads `keys` until `done`, counting the guard's events; the failed reads.
async fn read_until(
    conn: &mut redis::cluster_async::ClusterConnection,
    keys: &[String],
    manager: &TokenManager,
    id: u64,
    done: impl Fn(u32, u32, Duration) -> bool,
) -> (Vec<String>, u32, u32) {
    let mut events = manager.events();
    let (mut reauths, mut replaced) = (0u32, 0u32);
    let mut failures = Vec::new();
    let started = std::time::Instant::now();
    while !done(reauths, replaced, started.elapsed()) {
        assert!(
            started.elapsed() < WAIT,
            "{reauths} re-AUTHs, {replaced} replaced"
        );
        for key in keys {
            match conn.get::<_, Option<String>>(key).await {
                Ok(Some(v)) if v == value_of(key) => {}
                other => failures.push(format!("GET {key}: {other:?}")),
            }
        }
        while let Ok(event) = events.try_recv() {
            match event {
                TokenEvent::ConnectionReauthenticated { connection_id, .. }
                    if connection_id == id =>
                {
                    reauths += 1
                }
                TokenEvent::Reconnected { connection_id, .. } if connection_id == id => {
                    replaced += 1
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (failures, reauths, replaced)
}

#[tokio::test]
async fn a_cluster_client_built_by_the_user_follows_ten_token_rotations_without_a_failed_command() {
    let emulator = cluster_emulator(Duration::from_secs(3)).await;
    let manager = TokenManager::new(
        common::service_principal(&emulator),
        common::quick_options(),
    );
    let mut conn = users_cluster_client(&emulator, &manager).await;
    let guard = redis_entra::keep_authenticated(&conn, manager.clone()).unwrap();
    let keys = keys(30);
    for key in &keys {
        let _: () = conn.set(key, value_of(key)).await.unwrap();
    }
    assert_eq!(
        owners(&emulator, &keys).await.len(),
        3,
        "keys on every node"
    );
    let (failures, _, replaced) =
        read_until(&mut conn, &keys, &manager, guard.id(), |reauths, _, _| {
            reauths >= 10
        })
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(replaced, 0);
    assert_eq!(Stats::get(&emulator.stats().closed_at_expiry), 0);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_users_cluster_client_is_replaced_before_expiry_when_reauth_keeps_failing() {
    let lifetime = Duration::from_secs(4);
    let emulator = cluster_emulator(lifetime).await;
    let manager = TokenManager::new(
        common::service_principal(&emulator),
        common::quick_options(),
    );
    let mut conn = users_cluster_client(&emulator, &manager).await;
    let guard = redis_entra::keep_authenticated(&conn, manager.clone()).unwrap();
    let keys = keys(30);
    for key in &keys {
        let _: () = conn.set(key, value_of(key)).await.unwrap();
    }
    emulator.faults().set_refuse_reauth(true);
    let (failures, _, replaced) =
        read_until(&mut conn, &keys, &manager, guard.id(), |_, replaced, t| {
            t > lifetime * 3 && replaced >= 2
        })
        .await;
    // redis-rs retries the reads caught by a node's close on the new connection.
    assert!(failures.is_empty(), "{failures:?}");
    assert!(replaced >= 2);
    assert_eq!(
        Stats::get(&emulator.stats().closed_at_expiry),
        0,
        "a node connection was left to expire"
    );
    emulator.shutdown().await;
}
