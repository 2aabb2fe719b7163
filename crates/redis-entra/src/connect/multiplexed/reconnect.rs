//! Replacing the connection with one authenticated with a fresh token: on demand for a command
//! (a few attempts), or from the task (until it works).

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use redis::aio::MultiplexedConnection;
use redis::RedisError;

use super::errors::is_auth_error;
use super::state::{open, Inner, Slot};
use crate::error::{Error, Result};
use crate::token::events::TokenEvent;

impl Inner {
    /// The connection to use now (slow path): the slot's, or a new one if it is dead or its
    /// token expired.
    pub(super) async fn current(&self) -> redis::RedisResult<(MultiplexedConnection, u64)> {
        let expired = {
            let slot = self.lock();
            if !slot.broken && slot.expires_on > SystemTime::now() {
                return Ok((slot.conn.clone(), slot.generation));
            }
            (!slot.broken).then_some(slot.generation)
        };
        // The token this connection authenticated with has expired (an identity outage outlasted
        // it): the server closes such a connection, and on RESP2 nothing tells us until a
        // command fails on it. Replace it with a fresh token before sending anything.
        let reason = match expired {
            Some(generation) => {
                self.mark_broken(generation);
                "its token expired"
            }
            None => "the connection was lost",
        };
        self.reconnect(reason, false).await.map_err(|e| {
            RedisError::from((
                redis::ErrorKind::Io,
                "reconnecting with a fresh token failed",
                e.to_string(),
            ))
        })?;
        let slot = self.lock();
        Ok((slot.conn.clone(), slot.generation))
    }

    /// Replaces the connection with one authenticated with a fresh token. With `forever`, keeps
    /// trying (the background task, which stops when the last handle goes); otherwise gives up
    /// after a few attempts (a caller waits).
    pub(super) async fn reconnect(&self, reason: &str, forever: bool) -> Result<()> {
        let seen = self.lock().generation;
        let _guard = if forever {
            self.reconnecting.lock().await
        } else {
            // A caller does not queue behind the background task's endless attempts while the
            // server is unreachable: it waits one connect timeout, then gets an error.
            match tokio::time::timeout(self.options.connect_timeout, self.reconnecting.lock()).await
            {
                Ok(guard) => guard,
                Err(_) => {
                    return Err(Error::from(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "the connection to {}:{} is lost and could not be re-established within {:?}; it is retried in the background",
                            self.options.host, self.options.port, self.options.connect_timeout
                        ),
                    ))))
                }
            }
        };
        {
            let slot = self.lock();
            if slot.generation != seen && !slot.broken {
                return Ok(()); // someone else reconnected while we waited
            }
        }
        let mut attempt = 0u32;
        // Failures to connect with a token in hand; they alone grow the backoff.
        let mut connect_failures = 0u32;
        loop {
            attempt += 1;
            let creds = match self.manager.credentials().await {
                Ok(creds) => creds,
                // No token: `credentials` waited for the manager's next attempt, which its retry
                // policy paces, so try again at once: the first token after an identity outage
                // is used as soon as it arrives, not after a backoff grown during the outage.
                Err(e) if !matches!(e, Error::Stopped | Error::NoRuntime) => {
                    tracing::warn!(connection = self.id, attempt, error = %e, "no token to reconnect with");
                    if !forever && attempt >= 3 {
                        return Err(e);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let generation = self.lock().generation + 1;
            let result = open(
                &self.options,
                &creds,
                &self.lost,
                &self.live_generation,
                generation,
            )
            .await;
            match result {
                Ok(conn) => {
                    self.live_generation.store(generation, Ordering::SeqCst);
                    {
                        let mut slot = self.lock();
                        *slot = Slot {
                            conn,
                            generation,
                            broken: false,
                            token_generation: creds.generation(),
                            expires_on: creds.expires_on(),
                            token_lifetime: creds.time_left(),
                        };
                    }
                    // A hand-written MULTI open on the old connection is gone with it.
                    if self.multi_open.load(Ordering::Acquire) {
                        self.multi_lost.store(true, Ordering::Release);
                    }
                    self.bump_epoch();
                    tracing::info!(
                        connection = self.id,
                        reason,
                        "reconnected with a fresh token"
                    );
                    self.manager.emit(TokenEvent::Reconnected {
                        connection_id: self.id,
                        reason: reason.to_string(),
                    });
                    return Ok(());
                }
                Err(e) => {
                    if let Error::Redis(re) = &e {
                        if is_auth_error(re) {
                            // Paced by the manager: many refused connections cost a bounded
                            // number of token requests.
                            self.manager.refresh_now();
                        }
                    }
                    tracing::warn!(connection = self.id, attempt, error = %e, "reconnect failed");
                    if !forever && attempt >= 3 {
                        return Err(e);
                    }
                    connect_failures += 1;
                    let delay = Duration::from_millis(100u64 << connect_failures.min(5))
                        .min(Duration::from_secs(2));
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}
