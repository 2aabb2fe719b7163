//! Faults the emulator can be told to inject at run time, to test clients' retry logic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Duration;

/// How the identity endpoints (token endpoint and managed identity) misbehave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IdentityFault {
    /// Serve normally.
    #[default]
    None,
    /// Refuse every token request with HTTP 503 (an outage).
    Unavailable,
    /// Answer 429 with `Retry-After: secs`.
    TooManyRequests {
        /// The `Retry-After` value in seconds.
        retry_after_secs: u64,
    },
    /// Answer 500.
    InternalError,
    /// Answer 200 with a body that is not JSON.
    MalformedJson,
    /// Wait this long before answering normally.
    Slow(Duration),
    /// Answer with this HTTP status (e.g. IMDS' 404 and 410 while it updates, 429, 502,
    /// 504), shaped as the endpoint shapes errors, with `Retry-After` when given.
    Status {
        /// The HTTP status code (400-599; anything else is served as 500).
        code: u16,
        /// The `Retry-After` value in seconds, if any.
        retry_after_secs: Option<u64>,
    },
}

/// The faults in force.
#[derive(Debug, Default)]
pub struct Faults {
    identity: RwLock<IdentityFault>,
    refuse_reauth: AtomicBool,
}

impl Faults {
    /// The identity fault in force.
    pub fn identity(&self) -> IdentityFault {
        self.identity
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sets the identity fault (use [`IdentityFault::None`] to heal).
    pub fn set_identity(&self, fault: IdentityFault) {
        *self
            .identity
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fault;
    }

    /// Whether the gateway refuses re-authentication (see [`set_refuse_reauth`](Self::set_refuse_reauth)).
    pub fn refuse_reauth(&self) -> bool {
        self.refuse_reauth.load(Ordering::SeqCst)
    }

    /// While on, the gateway refuses every `AUTH` and `HELLO … AUTH` sent on a connection that
    /// is already authenticated: Redis answers `-WRONGPASS` in order (the gateway substitutes an
    /// invalid user, as for an invalid token) and the connection's deadline stays where it was,
    /// so it is closed when its current token expires. The first `AUTH` of a new connection
    /// still succeeds. Takes effect at once, for live connections too.
    pub fn set_refuse_reauth(&self, on: bool) {
        self.refuse_reauth.store(on, Ordering::SeqCst);
    }
}
