//! The cache's access keys: Azure's other way in, next to Entra ID.
//!
//! An Azure cache has a primary and a secondary access key, each 32 random bytes in standard
//! base64 (44 characters), and either one gives full access (`AUTH <key>` or
//! `AUTH default <key>`). Access-key authentication can be turned off, and either key can be
//! regenerated, after which the old one is refused for new `AUTH`s.
//!
//! Turning access keys off also closes every connection that authenticated with a key, as Azure
//! Managed Redis does ("disabling access keys terminates all existing connections"); the
//! gateway learns of it through [`AccessKeys::revocations`]. Regenerating a key leaves existing
//! connections alone: Redis never re-checks a password once a connection is in.
//!
//! The keys are secrets: [`AccessKeys`]'s `Debug` shows only whether they are enabled, and the
//! emulator never logs them.

use std::sync::{PoisonError, RwLock};

use base64::Engine;
use rand::RngCore;
use tokio::sync::watch;

/// Which of the two access keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// The primary key (the one the env file hands out).
    Primary,
    /// The secondary key (for rotation without downtime).
    Secondary,
}

impl KeyType {
    /// `primary` or `secondary`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Secondary => "secondary",
        }
    }
}

struct Keys {
    primary: String,
    secondary: String,
    enabled: bool,
}

/// The primary and secondary access keys, and whether access-key authentication is enabled.
///
/// Thread-safe; shared by the gateway (which checks keys) and the admin interface (which
/// rotates and disables them).
pub struct AccessKeys {
    keys: RwLock<Keys>,
    /// Bumped every time access keys are disabled: connections authenticated with a key watch
    /// it and close when it moves past the value they saw when they authenticated.
    revoked: watch::Sender<u64>,
    /// Bumped every time the enabled setting changes, either way (see [`AccessKeys::changes`]).
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeys")
            .field("enabled", &self.enabled())
            .field("primary", &"<redacted>")
            .field("secondary", &"<redacted>")
            .finish()
    }
}

impl Default for AccessKeys {
    fn default() -> Self {
        Self::new()
    }
}

/// A fresh key: 32 random bytes, standard base64 with padding (44 characters), as Azure's.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Why a password was refused as an access key (for logs: clients only ever see `WRONGPASS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRejection {
    /// Access-key authentication is disabled.
    #[error("access-key authentication is disabled")]
    Disabled,
    /// Neither the primary nor the secondary key.
    #[error("the password is not one of the cache's access keys")]
    Wrong,
}

/// Compares without leaking, through timing, how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AccessKeys {
    /// Two fresh keys, enabled (Azure Cache for Redis' default).
    pub fn new() -> Self {
        Self::with_keys(&generate_key(), &generate_key())
    }

    /// These two keys, enabled (a kept or well-known pair; see [`state`](crate::state)).
    pub fn with_keys(primary: &str, secondary: &str) -> Self {
        let (revoked, _) = watch::channel(0);
        let (changed, _) = watch::channel(0);
        Self {
            keys: RwLock::new(Keys {
                primary: primary.to_string(),
                secondary: secondary.to_string(),
                enabled: true,
            }),
            revoked,
            changed,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Keys> {
        self.keys.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current value of a key (a secret: do not log it).
    pub fn key(&self, which: KeyType) -> String {
        let keys = self.read();
        match which {
            KeyType::Primary => keys.primary.clone(),
            KeyType::Secondary => keys.secondary.clone(),
        }
    }

    /// The primary key.
    pub fn primary(&self) -> String {
        self.key(KeyType::Primary)
    }

    /// The secondary key.
    pub fn secondary(&self) -> String {
        self.key(KeyType::Secondary)
    }

    /// Whether access-key authentication is enabled.
    pub fn enabled(&self) -> bool {
        self.read().enabled
    }

    /// Enables or disables access-key authentication. Disabling it closes every gateway
    /// connection that authenticated with a key. Returns whether it was enabled before.
    pub fn set_enabled(&self, enabled: bool) -> bool {
        let mut keys = self.write();
        let was = keys.enabled;
        keys.enabled = enabled;
        if was && !enabled {
            // Under the lock, so that no AUTH sees "enabled" with the new epoch.
            self.revoked.send_modify(|epoch| *epoch += 1);
        }
        if was != enabled {
            self.changed.send_modify(|count| *count += 1);
        }
        was
    }

    /// Replaces a key with a fresh one and returns it. The old value is refused from now on;
    /// connections that authenticated with it stay open.
    pub fn regenerate(&self, which: KeyType) -> String {
        let fresh = generate_key();
        let mut keys = self.write();
        match which {
            KeyType::Primary => keys.primary = fresh.clone(),
            KeyType::Secondary => keys.secondary = fresh.clone(),
        }
        fresh
    }

    /// Checks a password against both keys. On success returns the revocation epoch the
    /// connection must watch (see [`revocations`](Self::revocations)).
    pub(crate) fn check(&self, candidate: &[u8]) -> Result<u64, KeyRejection> {
        let keys = self.read();
        if !keys.enabled {
            return Err(KeyRejection::Disabled);
        }
        let primary = constant_time_eq(candidate, keys.primary.as_bytes());
        let secondary = constant_time_eq(candidate, keys.secondary.as_bytes());
        if primary | secondary {
            Ok(*self.revoked.borrow())
        } else {
            Err(KeyRejection::Wrong)
        }
    }

    /// A receiver of the revocation epoch, which moves every time access keys are disabled.
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revoked.subscribe()
    }

    /// A receiver of how many times the enabled setting changed (either way): what a profile
    /// that closes every connection on such a change watches (see
    /// [`profile`](crate::profile)).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_look_like_azures() {
        let keys = AccessKeys::new();
        for key in [keys.primary(), keys.secondary()] {
            assert_eq!(key.len(), 44);
            assert!(key.ends_with('='));
        }
        assert_ne!(keys.primary(), keys.secondary());
    }

    #[test]
    fn check_disable_and_regenerate() {
        let keys = AccessKeys::new();
        let old = keys.primary();
        assert_eq!(keys.check(old.as_bytes()), Ok(0));
        assert_eq!(keys.check(b"nope"), Err(KeyRejection::Wrong));
        let fresh = keys.regenerate(KeyType::Primary);
        assert_eq!(keys.check(old.as_bytes()), Err(KeyRejection::Wrong));
        assert_eq!(keys.check(fresh.as_bytes()), Ok(0));
        assert!(keys.set_enabled(false));
        assert_eq!(keys.check(fresh.as_bytes()), Err(KeyRejection::Disabled));
        assert!(!keys.set_enabled(true));
        assert_eq!(keys.check(fresh.as_bytes()), Ok(1));
        assert!(!format!("{keys:?}").contains(&fresh));
    }
}
