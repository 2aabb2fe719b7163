//! What a connection's handles and its task share: the live connection (the slot), the signal
//! that reports it lost, and opening a connection wired to that signal.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind};
use tokio::sync::Notify;

use crate::connect::options::{ConnectOptions, Protocol};
use crate::error::Result;
use crate::token::credentials::RedisCredentials;
use crate::token::manager::TokenManager;

/// The live connection and what it is authenticated with.
pub(super) struct Slot {
    pub(super) conn: MultiplexedConnection,
    /// Which connection this is (bumped on every reconnect).
    pub(super) generation: u64,
    /// Set when the connection is known to be dead.
    pub(super) broken: bool,
    /// The token generation it last authenticated with.
    pub(super) token_generation: u64,
    /// When that token expires.
    pub(super) expires_on: SystemTime,
    /// That token's lifetime when the connection authenticated with it.
    pub(super) token_lifetime: Duration,
}

/// How a dead connection is reported to the task: the generation that died, then a wake-up.
/// Reports of an older generation (already replaced) are ignored, so one death causes one
/// reconnect however many signals report it.
#[derive(Default)]
pub(super) struct LostSignal {
    pub(super) generation: AtomicU64,
    pub(super) wake: Notify,
}

impl LostSignal {
    pub(super) fn report(&self, generation: u64) {
        self.generation.fetch_max(generation, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

pub(super) struct Inner {
    pub(super) id: u64,
    pub(super) options: ConnectOptions,
    pub(super) manager: TokenManager,
    pub(super) slot: Mutex<Slot>,
    /// Bumped whenever the slot's connection or its health changes; each handle keeps the
    /// connection it last used with the epoch it read, and takes the lock only when it moved.
    pub(super) epoch: AtomicU64,
    pub(super) reconnecting: tokio::sync::Mutex<()>,
    pub(super) lost: Arc<LostSignal>,
    /// The generation whose disconnection counts (older ones are replaced already).
    pub(super) live_generation: Arc<AtomicU64>,
    /// Handles of the connection; the task stops when the last one is dropped.
    pub(super) handles: AtomicUsize,
    pub(super) released: Notify,
    /// Commands sent whose replies have not come yet (the health probe waits while any are).
    pub(super) in_flight: AtomicUsize,
    /// A `MULTI` sent by hand (as its own round trip) is open: no `AUTH` until it ends.
    pub(super) multi_open: AtomicBool,
    pub(super) multi_closed: Notify,
    /// The connection was replaced while a hand-written `MULTI` was open: commands fail until
    /// the application ends the transaction.
    pub(super) multi_lost: AtomicBool,
}

impl Inner {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        // The slot holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn bump_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }
    pub(super) fn mark_broken(&self, generation: u64) {
        let mut slot = self.lock();
        if slot.generation == generation && !slot.broken {
            slot.broken = true;
            drop(slot);
            self.bump_epoch();
        }
    }
}

/// Opens a connection authenticated with `creds` whose disconnection is reported to `lost`.
pub(super) async fn open(
    options: &ConnectOptions,
    creds: &RedisCredentials,
    lost: &Arc<LostSignal>,
    live_generation: &Arc<AtomicU64>,
    generation: u64,
) -> Result<MultiplexedConnection> {
    let lost = lost.clone();
    let live = live_generation.clone();
    let mut config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(options.response_timeout);
    // redis-rs reports a disconnection as a push, which it allows on RESP3 only; on RESP2 the
    // maintenance task probes the connection instead.
    if options.protocol == Protocol::Resp3 {
        config = config.set_push_sender(move |info: PushInfo| {
            if info.kind == PushKind::Disconnection && live.load(Ordering::SeqCst) == generation {
                lost.report(generation);
            }
            Ok::<(), redis::aio::SendError>(())
        });
    }
    options.open_multiplexed(creds, config).await
}
