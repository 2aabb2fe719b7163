//! Faults the emulator can be told to inject at run time, to test clients' retry logic.
//!
//! - [`IdentityFault`]: how the token and managed-identity endpoints misbehave (outages,
//!   throttling, slowness, malformed replies, tokens for the wrong audience).
//! - Gateway faults: refused re-authentication ([`Faults::set_refuse_reauth`]), connections
//!   closed at random ([`Faults::set_random_close`]) and every client connection closed at
//!   once ([`Faults::close_all_connections`]).
//!
//! Restarting the backend is an action rather than a switch:
//! [`Emulator::restart_backend`](crate::Emulator::restart_backend).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use tokio::sync::watch;

/// The audience [`IdentityFault::WrongAudience`] puts in tokens unless told otherwise: Azure
/// Resource Manager's, a token a confused client might well hold.
pub const DEFAULT_WRONG_AUDIENCE: &str = "https://management.azure.com/";

/// The highest rate [`Faults::set_random_close`] takes, in closes per connection per second.
pub const MAX_CLOSE_RATE: f64 = 1000.0;

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
    /// Answer normally, but with a token whose `aud` is this audience instead of the resource
    /// asked for: otherwise valid (signed by the tenant's key, right issuer, `oid`, lifetime),
    /// so the gateway refuses it with `WRONGPASS`. A misconfigured token request looks like
    /// this from the cache's side.
    WrongAudience {
        /// The `aud` claim to put in tokens ([`DEFAULT_WRONG_AUDIENCE`] by default).
        audience: String,
    },
}

/// The faults in force.
#[derive(Debug)]
pub struct Faults {
    identity: RwLock<IdentityFault>,
    refuse_reauth: AtomicBool,
    /// Closes per authenticated gateway connection per second (0: off).
    random_close: watch::Sender<f64>,
    /// Bumped by [`Faults::close_all_connections`]; each gateway connection closes when it
    /// changes.
    close_all: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            identity: RwLock::default(),
            refuse_reauth: AtomicBool::new(false),
            random_close: watch::Sender::new(0.0),
            close_all: watch::Sender::new(0),
        }
    }
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

    /// How often each authenticated gateway connection is closed at random, in closes per
    /// connection per second (0 when off).
    pub fn random_close(&self) -> f64 {
        *self.random_close.borrow()
    }

    /// While `per_connection_per_second` is above 0, the gateway closes each authenticated
    /// connection (token or access key) at a random moment, abruptly: the TCP connection is
    /// closed without a TLS `close_notify` and without a reply, as Azure's proxy drops
    /// connections when a node fails over. The time to each connection's close is drawn from an
    /// exponential distribution with that rate (0.2: on average after 5 s), afresh whenever the
    /// rate changes; unauthenticated connections are left alone. 0 turns the fault off. Takes
    /// effect at once, for live connections too. Counted in
    /// [`Stats::closed_by_fault`](crate::stats::Stats::closed_by_fault).
    ///
    /// A rate that is not a finite number between 0 and [`MAX_CLOSE_RATE`] is an error saying
    /// so, and changes nothing.
    pub fn set_random_close(&self, per_connection_per_second: f64) -> Result<(), crate::Error> {
        if !per_connection_per_second.is_finite()
            || !(0.0..=MAX_CLOSE_RATE).contains(&per_connection_per_second)
        {
            return Err(crate::Error::Config(format!(
                "a random-close rate must be between 0 (off) and {MAX_CLOSE_RATE} closes per \
                 connection per second, not {per_connection_per_second}"
            )));
        }
        self.random_close.send_replace(per_connection_per_second);
        Ok(())
    }

    /// Closes every client connection of the gateway (authenticated or not) now, abruptly, as
    /// [`set_random_close`](Self::set_random_close) closes one; new connections are accepted as
    /// usual. Returns how many connections were told to close. Counted in
    /// [`Stats::closed_by_fault`](crate::stats::Stats::closed_by_fault).
    pub fn close_all_connections(&self) -> usize {
        let told = self.close_all.receiver_count();
        self.close_all
            .send_modify(|epoch| *epoch = epoch.wrapping_add(1));
        told
    }

    /// For the gateway: the random-close rate, to watch.
    pub(crate) fn watch_random_close(&self) -> watch::Receiver<f64> {
        self.random_close.subscribe()
    }

    /// For the gateway: resolves at the next [`close_all_connections`](Self::close_all_connections).
    pub(crate) fn watch_close_all(&self) -> watch::Receiver<u64> {
        self.close_all.subscribe()
    }
}
