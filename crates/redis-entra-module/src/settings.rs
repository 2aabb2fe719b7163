//! The settings that can change while the server runs (`CONFIG SET entra.<name>`): the skew,
//! the maximum lifetime and the two fetch intervals. The authority, tenants and audiences are
//! fixed at load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use redis_entra_jwt::Rules;

use crate::config::Config;

/// The upper bound of every setting, in seconds (a year).
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// One setting that `CONFIG SET` can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `entra.skew`: seconds of skew on `exp` and `nbf`.
    Skew,
    /// `entra.max-lifetime`: the longest token lifetime, in seconds.
    MaxLifetime,
    /// `entra.refresh-interval`: seconds between two periodic key fetches (at least 1).
    RefreshInterval,
    /// `entra.unknown-kid-interval`: the least seconds between two fetches for unknown `kid`s.
    UnknownKidInterval,
}

impl Setting {
    /// Every setting.
    pub const ALL: [Setting; 4] = [
        Self::Skew,
        Self::MaxLifetime,
        Self::RefreshInterval,
        Self::UnknownKidInterval,
    ];

    /// Its name after `entra.` (as the module argument is named).
    pub fn name(self) -> &'static str {
        match self {
            Self::Skew => "skew",
            Self::MaxLifetime => "max-lifetime",
            Self::RefreshInterval => "refresh-interval",
            Self::UnknownKidInterval => "unknown-kid-interval",
        }
    }

    /// The least value accepted.
    pub fn min(self) -> u64 {
        match self {
            Self::RefreshInterval => 1,
            _ => 0,
        }
    }
}

/// The live settings.
pub struct Settings {
    rules: RwLock<Rules>,
    refresh_interval: AtomicU64,
    unknown_kid_interval: AtomicU64,
}

impl Settings {
    /// The settings the module was loaded with.
    pub fn new(config: &Config) -> Self {
        Self {
            rules: RwLock::new(config.rules.clone()),
            refresh_interval: AtomicU64::new(config.refresh_interval.as_secs()),
            unknown_kid_interval: AtomicU64::new(config.unknown_kid_interval.as_secs()),
        }
    }

    /// The rules tokens are checked against now.
    pub fn rules(&self) -> RwLockReadGuard<'_, Rules> {
        self.rules.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Seconds between two periodic fetches.
    pub fn refresh_interval(&self) -> Duration {
        Duration::from_secs(self.refresh_interval.load(Ordering::Relaxed).max(1))
    }

    /// The least time between two fetches for unknown `kid`s.
    pub fn unknown_kid_interval(&self) -> Duration {
        Duration::from_secs(self.unknown_kid_interval.load(Ordering::Relaxed))
    }

    /// A setting's value, in seconds.
    pub fn get(&self, setting: Setting) -> u64 {
        match setting {
            Setting::Skew => self.rules().skew.as_secs(),
            Setting::MaxLifetime => self.rules().max_lifetime.as_secs(),
            Setting::RefreshInterval => self.refresh_interval.load(Ordering::Relaxed),
            Setting::UnknownKidInterval => self.unknown_kid_interval.load(Ordering::Relaxed),
        }
    }

    /// Sets a setting, in seconds; an error names the range when the value is out of it.
    pub fn set(&self, setting: Setting, seconds: u64) -> Result<(), String> {
        if seconds < setting.min() || seconds > MAX_SECONDS {
            return Err(format!(
                "entra.{} takes {}..={MAX_SECONDS} seconds",
                setting.name(),
                setting.min()
            ));
        }
        let rules = || self.rules.write().unwrap_or_else(PoisonError::into_inner);
        match setting {
            Setting::Skew => rules().skew = Duration::from_secs(seconds),
            Setting::MaxLifetime => rules().max_lifetime = Duration::from_secs(seconds),
            Setting::RefreshInterval => self.refresh_interval.store(seconds, Ordering::Relaxed),
            Setting::UnknownKidInterval => {
                self.unknown_kid_interval.store(seconds, Ordering::Relaxed)
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_change_within_their_range() {
        let config = Config::parse(&["tenant", "t"]).unwrap();
        let s = Settings::new(&config);
        assert_eq!(s.get(Setting::Skew), 2);
        s.set(Setting::Skew, 5).unwrap();
        assert_eq!(s.rules().skew, Duration::from_secs(5));
        s.set(Setting::MaxLifetime, 60).unwrap();
        assert_eq!(s.get(Setting::MaxLifetime), 60);
        assert!(s.set(Setting::RefreshInterval, 0).is_err());
        assert!(s.set(Setting::Skew, MAX_SECONDS + 1).is_err());
        s.set(Setting::UnknownKidInterval, 0).unwrap();
        assert_eq!(s.unknown_kid_interval(), Duration::ZERO);
    }
}
