//! The blocking connection against the emulator, written as a plain sync program would use it:
//! no `#[tokio::test]`, no runtime in the test's thread. The emulator runs on a runtime of its
//! own, on other threads.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::Commands;
use redis_entra::{BlockingTokenManager, EntraSyncConnection, TokenEvent};
use redis_entra_emulator::Emulator;

use common::*;

/// The emulator on a runtime of its own (the test's thread stays plain sync).
struct Local {
    emulator: Option<Emulator>,
    runtime: tokio::runtime::Runtime,
}

impl Local {
    fn start(lifetime: Duration) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emulator = runtime.block_on(emulator(lifetime));
        Self {
            emulator: Some(emulator),
            runtime,
        }
    }

    fn emulator(&self) -> &Emulator {
        self.emulator.as_ref().unwrap()
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if let Some(e) = self.emulator.take() {
            self.runtime.block_on(e.shutdown());
        }
    }
}

#[test]
fn a_sync_connection_stays_authenticated_across_ten_rotations() {
    let local = Local::start(Duration::from_secs(3));
    let emulator = local.emulator();
    let tokens = BlockingTokenManager::new(service_principal(emulator), quick_options()).unwrap();
    let first = tokens.credentials().unwrap();
    assert_eq!(first.username(), emulator.service_principal().object_id);
    let mut events = tokens.events();
    let mut conn = EntraSyncConnection::connect(connect_options(emulator), tokens.clone()).unwrap();

    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    let (mut reauths, mut reconnects) = (0u32, 0u32);
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut took = Vec::new();
    let mut i = 0u64;
    while reauths < 10 {
        assert!(
            Instant::now() < deadline,
            "only {reauths} re-authentications in 90 s"
        );
        i += 1;
        let round: redis::RedisResult<()> = (|| {
            let _: () = conn.set("sync:k", i)?;
            let v: u64 = conn.get("sync:k")?;
            assert_eq!(v, i);
            if i.is_multiple_of(10) {
                // A transaction sent as separate commands.
                redis::cmd("MULTI").exec(&mut conn)?;
                redis::cmd("INCR").arg("sync:n").exec(&mut conn)?;
                let _: Vec<i64> = redis::cmd("EXEC").query(&mut conn)?;
            }
            Ok(())
        })();
        match round {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                eprintln!("round {i}: {e}");
            }
        }
        while let Ok(ev) = events.try_recv() {
            match ev {
                TokenEvent::ConnectionReauthenticated {
                    connection_id,
                    took: t,
                    ..
                } if connection_id == conn.id() => {
                    reauths += 1;
                    took.push(t);
                }
                TokenEvent::Reconnected { .. } => reconnects += 1,
                _ => {}
            }
        }
        // Pace the traffic (this is load shaping, not synchronisation).
        std::thread::sleep(Duration::from_millis(5));
    }
    took.sort();
    eprintln!(
        "sync: {ok} rounds, {reauths} re-authentications in {:?}; AUTH round trip median {:?}, max {:?}",
        started.elapsed(),
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert_eq!(failed, 0, "{failed} of {} rounds failed", ok + failed);
    assert_eq!(reconnects, 0, "re-authenticated in place, never replaced");
    assert_eq!(
        emulator.stats().closed_at_expiry.load(Ordering::Relaxed),
        0,
        "no connection reached its token's expiry"
    );
    // One token request per refresh.
    let requests = emulator.stats().token_requests.load(Ordering::Relaxed);
    assert!(
        requests <= u64::from(reauths) + 3,
        "{requests} token requests"
    );
}

#[test]
fn a_transaction_open_across_a_token_arrival_is_not_broken() {
    let local = Local::start(Duration::from_secs(3));
    let emulator = local.emulator();
    let tokens = BlockingTokenManager::new(service_principal(emulator), quick_options()).unwrap();
    let mut events = tokens.events();
    let mut conn = EntraSyncConnection::connect(connect_options(emulator), tokens.clone()).unwrap();
    let _: () = conn.del("sync:tx").unwrap();
    let before = tokens.current().unwrap().generation();
    redis::cmd("MULTI").exec(&mut conn).unwrap();
    redis::cmd("INCR").arg("sync:tx").exec(&mut conn).unwrap();
    // Wait (on the manager's events) for a new token while the MULTI is open.
    loop {
        match events.blocking_recv().unwrap() {
            TokenEvent::Refreshed { generation, .. } if generation > before => break,
            _ => {}
        }
    }
    redis::cmd("INCR").arg("sync:tx").exec(&mut conn).unwrap();
    let replies: Vec<i64> = redis::cmd("EXEC").query(&mut conn).unwrap();
    assert_eq!(
        replies,
        vec![1, 2],
        "no AUTH was queued inside the transaction"
    );
    // The next command, outside the transaction, re-authenticates.
    let v: i64 = conn.get("sync:tx").unwrap();
    assert_eq!(v, 2);
    let reauthenticated = std::iter::from_fn(|| events.try_recv().ok()).any(|ev| {
        matches!(ev, TokenEvent::ConnectionReauthenticated { connection_id, .. } if connection_id == conn.id())
    });
    assert!(reauthenticated);
}

#[test]
fn a_connection_idle_past_its_token_expiry_reconnects_before_the_next_command() {
    let local = Local::start(Duration::from_secs(3));
    let emulator = local.emulator();
    let tokens = BlockingTokenManager::new(service_principal(emulator), quick_options()).unwrap();
    let mut events = tokens.events();
    let mut conn = EntraSyncConnection::connect(connect_options(emulator), tokens.clone()).unwrap();
    let _: () = conn.set("sync:idle", "before").unwrap();
    // Nothing is sent: the gateway closes the connection when its token expires.
    let deadline = Instant::now() + Duration::from_secs(20);
    while emulator.stats().closed_at_expiry.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the gateway never closed the idle connection"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next command succeeds: the wrapper saw the token had expired and reconnected first.
    let v: String = conn.get("sync:idle").unwrap();
    assert_eq!(v, "before");
    let reconnected = std::iter::from_fn(|| events.try_recv().ok()).any(|ev| {
        matches!(ev, TokenEvent::Reconnected { connection_id, .. } if connection_id == conn.id())
    });
    assert!(reconnected);
}

#[test]
fn debug_output_never_shows_the_token() {
    let local = Local::start(Duration::from_secs(3600));
    let emulator = local.emulator();
    let tokens = BlockingTokenManager::new(service_principal(emulator), quick_options()).unwrap();
    let creds = tokens.credentials().unwrap();
    let conn = EntraSyncConnection::connect(connect_options(emulator), tokens.clone()).unwrap();
    for text in [
        format!("{tokens:?}"),
        format!("{conn:?}"),
        format!("{creds:?}"),
    ] {
        assert!(!text.contains(creds.token()), "{text}");
    }
}
