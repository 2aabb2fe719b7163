//! The signing keys the gateway trusts, each under its `kid` with a generation, and the
//! revocation signal sessions watch.
//!
//! Every key added gets a new generation (a counter that never repeats), so a key replaced
//! under the same `kid` is a different key to whoever remembers the generation it verified
//! with: the verified-token memory stores it and re-checks it on every hit, and a live session
//! keeps it to learn (through [`TrustedKeys::revocations`]) that the key that vouched for its
//! token is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use jsonwebtoken::DecodingKey;
use tokio::sync::watch;

/// One trusted key: its generation and the key itself.
#[derive(Clone)]
pub(crate) struct TrustedKey {
    pub(crate) generation: u64,
    pub(crate) key: DecodingKey,
}

/// The keys, by `kid`.
pub(crate) struct TrustedKeys {
    keys: RwLock<HashMap<String, TrustedKey>>,
    next_generation: AtomicU64,
    /// Bumped whenever a key stops being trusted (removed or replaced).
    revoked: watch::Sender<u64>,
}

impl TrustedKeys {
    pub(crate) fn new() -> Self {
        let (revoked, _) = watch::channel(0);
        Self {
            keys: RwLock::new(HashMap::new()),
            next_generation: AtomicU64::new(1),
            revoked,
        }
    }

    /// Trusts `key` under `kid`, replacing any key with that `kid` (which is then revoked).
    pub(crate) fn insert(&self, kid: String, key: DecodingKey) {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let replaced = self
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(kid, TrustedKey { generation, key })
            .is_some();
        if replaced {
            self.revoked.send_modify(|n| *n += 1);
        }
    }

    /// Stops trusting `kid`; returns whether it was trusted.
    pub(crate) fn remove(&self, kid: &str) -> bool {
        let removed = self
            .keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(kid)
            .is_some();
        if removed {
            self.revoked.send_modify(|n| *n += 1);
        }
        removed
    }

    /// The key trusted under `kid` now.
    pub(crate) fn get(&self, kid: &str) -> Option<TrustedKey> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kid)
            .cloned()
    }

    /// The generation of the key trusted under `kid` now.
    pub(crate) fn generation_of(&self, kid: &str) -> Option<u64> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kid)
            .map(|k| k.generation)
    }

    /// Whether the key of generation `generation` is still trusted (under any `kid`).
    pub(crate) fn is_trusted(&self, generation: u64) -> bool {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .any(|k| k.generation == generation)
    }

    /// The `kid`s trusted now.
    pub(crate) fn kids(&self) -> Vec<String> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// A receiver of the revocation counter, which moves whenever a key is removed or replaced.
    pub(crate) fn revocations(&self) -> watch::Receiver<u64> {
        self.revoked.subscribe()
    }
}
