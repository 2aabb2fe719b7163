//! The per-connection task: `AUTH` in place on every new token, the RESP2 health probe,
//! reconnecting on loss or at the token's expiry, and stopping with the last handle.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use redis::Value;

use super::errors::{is_auth_error, is_connection_error};
use super::state::Inner;
use crate::connect::options::Protocol;
use crate::token::credentials::RedisCredentials;
use crate::token::events::TokenEvent;

impl Inner {
    /// Resolves once every handle of the connection is gone.
    async fn released(&self) {
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.handles.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Brings the connection up to `creds` (or a newer token): `AUTH` on the live connection,
    /// retried; a reconnect if it is dead or its token expired; a replacement if re-`AUTH` keeps
    /// failing as expiry nears. Returns once the connection holds a token at least as new as
    /// `creds`, or is being replaced by a caller.
    async fn reauthenticate(&self, mut creds: Arc<RedisCredentials>) {
        let mut attempt = 0u32;
        loop {
            if let Some(newer) = self.manager.current() {
                if newer.generation() > creds.generation() {
                    creds = newer;
                }
            }
            let (mut conn, generation, broken, expires_on, lifetime) = {
                let slot = self.lock();
                if slot.token_generation >= creds.generation() && !slot.broken {
                    return;
                }
                (
                    slot.conn.clone(),
                    slot.generation,
                    slot.broken,
                    slot.expires_on,
                    slot.token_lifetime,
                )
            };
            // Replace the connection while there is still time to do it cleanly.
            let replace_at = (lifetime / 10).max(Duration::from_secs(1));
            let left = expires_on
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            if broken || left.is_zero() {
                // Dead, or the server has closed (or is about to close) a connection whose token
                // expired: `AUTH` on it would fail; connect afresh with the new token instead.
                self.mark_broken(generation);
                let reason = if broken {
                    "the connection was lost"
                } else {
                    "its token expired"
                };
                if self.reconnect(reason, true).await.is_err() {
                    return;
                }
                // Loop: the reconnect may have been someone else's, with an older token.
                continue;
            }
            // Never inside a hand-written MULTI: its EXEC would answer for our AUTH too.
            if self
                .wait_for_multi_to_close(left.saturating_sub(replace_at))
                .await
            {
                tracing::warn!(
                    connection = self.id,
                    "a MULTI stayed open until the token's expiry neared; replacing the connection"
                );
                if self
                    .reconnect("its token expired inside a MULTI", true)
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            let started = Instant::now();
            let auth = redis::cmd("AUTH")
                .arg(creds.username())
                .arg(creds.token())
                .to_owned();
            let result = tokio::time::timeout(
                Duration::from_secs(10),
                auth.query_async::<Value>(&mut conn),
            )
            .await;
            match result {
                Ok(Ok(Value::Okay)) => {
                    let took = started.elapsed();
                    {
                        let mut slot = self.lock();
                        if slot.generation == generation
                            && slot.token_generation < creds.generation()
                        {
                            slot.token_generation = creds.generation();
                            slot.expires_on = creds.expires_on();
                            slot.token_lifetime = creds.time_left();
                        }
                    }
                    tracing::debug!(connection = self.id, ?took, "re-authenticated");
                    self.manager.emit(TokenEvent::ConnectionReauthenticated {
                        connection_id: self.id,
                        expires_on: creds.expires_on(),
                        took,
                    });
                    continue;
                }
                Ok(Err(e)) if is_connection_error(&e) => {
                    self.mark_broken(generation);
                    continue;
                }
                other => {
                    attempt += 1;
                    let error = match other {
                        Ok(Ok(reply)) => format!("AUTH answered {reply:?}, not OK"),
                        Ok(Err(e)) => {
                            if is_auth_error(&e) {
                                self.manager.refresh_now();
                            }
                            e.to_string()
                        }
                        Err(_) => "AUTH timed out after 10 s".to_string(),
                    };
                    tracing::warn!(connection = self.id, attempt, %error, "re-authentication failed");
                    self.manager.emit(TokenEvent::ReauthenticationFailed {
                        connection_id: self.id,
                        error,
                    });
                    let left = expires_on
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    if left <= replace_at || attempt >= 5 {
                        // The old connection still works until its token expires: leave it in
                        // place (not marked broken), so commands keep flowing on it while the
                        // new one connects and authenticates, instead of waiting for it.
                        // `reconnect` swaps the new one in; the old one closes once the
                        // commands already sent on it have their replies (they hold clones).
                        if self
                            .reconnect("re-authentication kept failing", true)
                            .await
                            .is_err()
                        {
                            return;
                        }
                        attempt = 0;
                        continue;
                    }
                    let delay = Duration::from_millis(100u64 << attempt.min(6))
                        .min(left.saturating_sub(replace_at) / 2)
                        .max(Duration::from_millis(50));
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Probes an idle RESP2 connection with `PING`. A connection with commands in flight is not
    /// probed: its own replies (or their failure) tell, and a `PING` queued behind a long
    /// blocking command would take a slow reply for a dead connection.
    async fn probe(&self) {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return;
        }
        let (mut conn, generation, broken) = {
            let slot = self.lock();
            (slot.conn.clone(), slot.generation, slot.broken)
        };
        let alive = !broken
            && matches!(
                tokio::time::timeout(
                    Duration::from_secs(5),
                    redis::cmd("PING").query_async::<redis::Value>(&mut conn),
                )
                .await,
                Ok(Ok(_))
            );
        // A command started while the probe waited: the probe's silence proves nothing.
        if !alive && self.in_flight.load(Ordering::Relaxed) == 0 {
            self.mark_broken(generation);
            let _ = self
                .reconnect("the connection stopped answering", true)
                .await;
        }
    }
}

/// The per-connection task: re-authenticate on every new token, reconnect on loss, mark the
/// connection dead at its token's expiry. It stops when the last handle is dropped, whatever it
/// is doing then (a reconnect that keeps being refused included), and with it its hold on the
/// token manager.
pub(super) async fn maintain(inner: Arc<Inner>) {
    tokio::select! {
        _ = inner.released() => {}
        _ = maintain_loop(&inner) => {}
    }
    tracing::debug!(connection = inner.id, "connection released; its task stops");
}

async fn maintain_loop(inner: &Inner) {
    let mut tokens = inner.manager.watch();
    let probe_every = match inner.options.protocol {
        Protocol::Resp2 => inner.options.health_check_interval,
        Protocol::Resp3 => None,
    };
    let mut probe = probe_every.map(|every| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        let tick = async {
            match probe.as_mut() {
                Some(i) => {
                    i.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        // At the token's expiry, handles must stop using the connection (the server closes it):
        // marking it here keeps the clock off the command path.
        let (expires_on, generation) = {
            let slot = inner.lock();
            (slot.expires_on, slot.generation)
        };
        let expiry = async {
            let left = expires_on
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(left).await;
        };
        tokio::select! {
            _ = tick => inner.probe().await,
            creds = tokens.next() => {
                let Some(creds) = creds else { return };
                inner.reauthenticate(creds).await;
            }
            _ = inner.lost.wake.notified() => {
                let lost = inner.lost.generation.load(Ordering::SeqCst);
                // Only the live generation's death counts: an older one is replaced already.
                if lost == inner.lock().generation {
                    inner.mark_broken(lost);
                    // With `forever`, only a terminal error (the manager stopped) comes back.
                    if inner.reconnect("the server closed the connection", true).await.is_err() {
                        return;
                    }
                }
            }
            _ = expiry => {
                let still = {
                    let slot = inner.lock();
                    slot.generation == generation && slot.expires_on <= SystemTime::now()
                };
                if still {
                    inner.mark_broken(generation);
                    if inner.reconnect("its token expired", true).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
