//! What a Redis connection authenticates with: the username (`oid`) and the token.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::claims::TokenClaims;

/// A username and access token for `AUTH <username> <token>`, with the token's claims.
///
/// `Debug` never shows the token.
#[derive(Clone)]
pub struct RedisCredentials {
    username: String,
    token: String,
    expires_on: SystemTime,
    claims: TokenClaims,
    generation: u64,
}

impl fmt::Debug for RedisCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCredentials")
            .field("username", &self.username)
            .field("token", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .field("generation", &self.generation)
            .finish()
    }
}

impl RedisCredentials {
    /// Credentials from parts. `expires_on` is the credential's word, or the token's `exp`.
    pub fn new(
        username: impl Into<String>,
        token: impl Into<String>,
        expires_on: SystemTime,
        claims: TokenClaims,
    ) -> Self {
        Self {
            username: username.into(),
            token: token.into(),
            expires_on,
            claims,
            generation: 0,
        }
    }

    pub(crate) fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// The Redis username (the token's `oid`, unless overridden).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The access token, sent as the Redis password. Never log it.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// When the token expires.
    pub fn expires_on(&self) -> SystemTime {
        self.expires_on
    }

    /// Time left before expiry (zero once expired).
    pub fn time_left(&self) -> Duration {
        self.expires_on
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }

    /// Whether the token has expired.
    pub fn is_expired(&self) -> bool {
        self.time_left().is_zero()
    }

    /// The token's claims.
    pub fn claims(&self) -> &TokenClaims {
        &self.claims
    }

    /// Which token of the manager this is (1 for the first).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Seconds since the epoch at which the token expires.
    pub fn expires_on_unix(&self) -> u64 {
        self.expires_on
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}
