//! Users' sign-ins in progress: device codes waiting for approval, authorization codes waiting
//! to be redeemed, and how the emulator approves them.
//!
//! By default the emulator approves a device code as soon as it issues it, as the tenant's
//! first user (so unattended tests need nobody at a browser); turn that off with
//! [`SignInState::set_auto_approve`] and approve or decline through
//! `POST /{tenant}/oauth2/v2.0/devicecode/approve` or the verification page. The sign-in page
//! of the authorization-code flow shows a username/password form, unless
//! [`SignInState::set_auto_submit`] is on: then it signs in the first user by itself (for
//! headless browser tests).
//!
//! Every store is bounded: at most [`SIGN_IN_STORE_CAPACITY`] entries each; an insertion first
//! drops the expired entries (a device code nobody polls lives its 15 minutes, no longer), then,
//! while the store is still full, the entry that would expire soonest.
//!
//! Codes are secrets: `Debug` shows counts only, and nothing here logs one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How many entries each sign-in store (pending device codes, authorization codes, refresh
/// tokens) holds at most.
pub const SIGN_IN_STORE_CAPACITY: usize = 1024;

/// What a bounded store needs of its entries: when they stop counting.
pub(crate) trait Expires {
    fn expires_at(&self) -> Instant;
}

impl Expires for DeviceGrant {
    fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

impl Expires for CodeGrant {
    fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

impl Expires for RefreshGrant {
    fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

/// Inserts into a bounded store (see the module documentation).
pub(crate) fn insert_bounded<V: Expires>(store: &Mutex<HashMap<String, V>>, key: String, value: V) {
    let mut map = store.lock().unwrap_or_else(PoisonError::into_inner);
    if map.len() >= SIGN_IN_STORE_CAPACITY {
        let now = Instant::now();
        map.retain(|_, v| v.expires_at() > now);
    }
    while map.len() >= SIGN_IN_STORE_CAPACITY {
        let soonest = map
            .iter()
            .min_by_key(|(_, v)| v.expires_at())
            .map(|(k, _)| k.clone());
        match soonest {
            Some(k) => {
                map.remove(&k);
            }
            None => break,
        }
    }
    map.insert(key, value);
}

/// How long a device code lives (Entra: 15 minutes).
pub(crate) const DEVICE_CODE_LIFETIME: Duration = Duration::from_secs(900);
/// How long an authorization code lives (Entra: about 10 minutes).
pub(crate) const AUTH_CODE_LIFETIME: Duration = Duration::from_secs(600);
/// How long a refresh token lives unused (Entra: 90 days).
pub(crate) const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// Where a device code stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeviceStatus {
    /// Nobody has approved it yet.
    Pending,
    /// Approved by the user with this object id.
    Approved(String),
    /// The user said no.
    Declined,
}

/// A device code grant in progress.
#[derive(Debug, Clone)]
pub(crate) struct DeviceGrant {
    pub user_code: String,
    pub client_id: String,
    pub scope: String,
    pub expires_at: Instant,
    pub interval: Duration,
    pub last_poll: Instant,
    pub status: DeviceStatus,
}

/// An issued authorization code.
#[derive(Debug, Clone)]
pub(crate) struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub scope: String,
    pub object_id: String,
    pub expires_at: Instant,
}

/// An issued refresh token (single use: redeeming it issues a new one).
#[derive(Debug, Clone)]
pub(crate) struct RefreshGrant {
    pub client_id: String,
    pub object_id: String,
    pub expires_at: Instant,
}

/// The user sign-ins of a tenant (see the module documentation).
pub struct SignInState {
    auto_approve: AtomicBool,
    auto_submit: AtomicBool,
    interval_secs: AtomicU64,
    pub(crate) device_codes: Mutex<HashMap<String, DeviceGrant>>,
    pub(crate) codes: Mutex<HashMap<String, CodeGrant>>,
    pub(crate) refresh_tokens: Mutex<HashMap<String, RefreshGrant>>,
}

impl Default for SignInState {
    fn default() -> Self {
        Self {
            auto_approve: AtomicBool::new(true),
            auto_submit: AtomicBool::new(false),
            interval_secs: AtomicU64::new(1),
            device_codes: Mutex::new(HashMap::new()),
            codes: Mutex::new(HashMap::new()),
            refresh_tokens: Mutex::new(HashMap::new()),
        }
    }
}

impl std::fmt::Debug for SignInState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInState")
            .field("auto_approve", &self.auto_approve())
            .field("auto_submit", &self.auto_submit())
            .field(
                "device_codes",
                &self.device_codes.lock().map(|m| m.len()).unwrap_or(0),
            )
            .finish_non_exhaustive()
    }
}

impl SignInState {
    /// Whether device codes are approved as soon as they are issued (default on).
    pub fn auto_approve(&self) -> bool {
        self.auto_approve.load(Ordering::Relaxed)
    }

    /// Turns automatic approval of device codes on or off.
    pub fn set_auto_approve(&self, on: bool) {
        self.auto_approve.store(on, Ordering::Relaxed);
    }

    /// Whether the sign-in page signs in the first user by itself (default off).
    pub fn auto_submit(&self) -> bool {
        self.auto_submit.load(Ordering::Relaxed)
    }

    /// Turns the sign-in page's automatic sign-in on or off (for headless browser tests).
    pub fn set_auto_submit(&self, on: bool) {
        self.auto_submit.store(on, Ordering::Relaxed);
    }

    /// The polling interval device codes ask for (default 1 s; Entra uses 5 s).
    pub fn device_code_interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs.load(Ordering::Relaxed).max(1))
    }

    /// Sets the polling interval of new device codes (at least a second).
    pub fn set_device_code_interval(&self, interval: Duration) {
        self.interval_secs
            .store(interval.as_secs().max(1), Ordering::Relaxed);
    }

    /// How many device codes are stored (pending, approved or declined, not yet redeemed or
    /// pruned).
    pub fn device_code_count(&self) -> usize {
        self.device_codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// How many authorization codes are stored.
    pub fn code_count(&self) -> usize {
        self.codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// How many refresh tokens are stored.
    pub fn refresh_token_count(&self) -> usize {
        self.refresh_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Revokes every refresh token (as a password reset or an admin's revocation does).
    pub fn forget_refresh_tokens(&self) {
        self.refresh_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Approves the pending device code with this user code as the user `object_id`; `false`
    /// when there is no such pending code.
    pub fn approve(&self, user_code: &str, object_id: &str) -> bool {
        self.set_status(user_code, DeviceStatus::Approved(object_id.to_string()))
    }

    /// Declines the pending device code with this user code; `false` when there is none.
    pub fn decline(&self, user_code: &str) -> bool {
        self.set_status(user_code, DeviceStatus::Declined)
    }

    fn set_status(&self, user_code: &str, status: DeviceStatus) -> bool {
        let mut codes = self
            .device_codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match codes.values_mut().find(|g| {
            g.user_code.eq_ignore_ascii_case(user_code.trim())
                && g.status == DeviceStatus::Pending
                && g.expires_at > now
        }) {
            Some(grant) => {
                grant.status = status;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(expires_at: Instant) -> RefreshGrant {
        RefreshGrant {
            client_id: String::new(),
            object_id: String::new(),
            expires_at,
        }
    }

    #[test]
    fn a_full_store_drops_the_expired_then_the_soonest_to_expire() {
        let store = Mutex::new(HashMap::new());
        let now = Instant::now();
        let past = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        for i in 0..SIGN_IN_STORE_CAPACITY {
            insert_bounded(&store, format!("old{i}"), grant(past));
        }
        // Full of expired entries: the next insertion drops them all.
        insert_bounded(&store, "new".into(), grant(now + Duration::from_secs(60)));
        assert_eq!(store.lock().unwrap().len(), 1);
        // Full of live entries: the one expiring soonest makes room.
        for i in 1..SIGN_IN_STORE_CAPACITY {
            insert_bounded(
                &store,
                format!("live{i}"),
                grant(now + Duration::from_secs(120 + i as u64)),
            );
        }
        assert_eq!(store.lock().unwrap().len(), SIGN_IN_STORE_CAPACITY);
        insert_bounded(
            &store,
            "last".into(),
            grant(now + Duration::from_secs(9999)),
        );
        let store = store.lock().unwrap();
        assert_eq!(store.len(), SIGN_IN_STORE_CAPACITY);
        assert!(!store.contains_key("new") && store.contains_key("last"));
    }
}
