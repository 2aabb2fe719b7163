//! A new token on a subscribed connection: `AUTH` in place (RESP3), or the handover to a new
//! connection with a marker, or without one (see the [module docs](super)).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::stream::StreamExt;
use futures::FutureExt;
use redis::{AsyncConnectionConfig, Value};

use super::link::{timed_out, Event, Link, LinkConn};
use super::message::Message;
use super::subscriptions::SubscriptionKind;
use super::worker::{Gone, Worker};
use super::STEP_TIMEOUT;
use crate::connect::multiplexed::is_connection_error;
use crate::connect::options::ConnectOptions;
use crate::error::{Error, Result};
use crate::token::credentials::RedisCredentials;
use crate::token::events::TokenEvent;

impl Worker {
    /// A new token: re-authenticate (RESP3) or hand over (RESP2). Returns when to try again
    /// if it failed.
    pub(super) async fn renew(
        &mut self,
        creds: Arc<RedisCredentials>,
        attempt: u32,
    ) -> std::result::Result<Option<(tokio::time::Instant, u32)>, Gone> {
        let started = Instant::now();
        let mut failure = None;
        if let LinkConn::Resp3(conn) = &mut self.link.conn {
            let auth = redis::cmd("AUTH")
                .arg(creds.username())
                .arg(creds.token())
                .to_owned();
            let mut conn = conn.clone();
            match tokio::time::timeout(STEP_TIMEOUT, auth.query_async::<()>(&mut conn)).await {
                Ok(Ok(())) => {
                    self.link.token_generation = creds.generation();
                    self.link.expires_on = creds.expires_on();
                    self.reauthenticated(&creds, started);
                    return Ok(None);
                }
                Ok(Err(e)) if is_connection_error(&e) => {
                    self.replace("the connection was lost during re-authentication")
                        .await?;
                    return Ok(None);
                }
                Ok(Err(e)) => failure = Some(e.to_string()),
                Err(_) => failure = Some("AUTH timed out".to_string()),
            }
        }
        if let Some(error) = failure {
            tracing::warn!(subscription = self.id, %error, "re-authentication failed; handing over to a new connection");
        }
        match self.handover(&creds).await? {
            Ok(Switch::Seamless) => {
                self.reauthenticated(&creds, started);
                Ok(None)
            }
            Ok(Switch::Gap) => {
                // The old connection died before the switch point: say there may be a gap.
                self.manager.emit(TokenEvent::Reconnected {
                    connection_id: self.id,
                    reason:
                        "the old connection closed during a handover; messages may have been lost"
                            .into(),
                });
                Ok(None)
            }
            Err(e) => {
                let attempt = attempt + 1;
                tracing::warn!(subscription = self.id, attempt, error = %e, "handover failed; the old connection stays");
                self.manager.emit(TokenEvent::ReauthenticationFailed {
                    connection_id: self.id,
                    error: e.to_string(),
                });
                let left = self
                    .link
                    .expires_on
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                let delay = Duration::from_millis(100u64 << attempt.min(5))
                    .min(left / 4)
                    .max(Duration::from_millis(50));
                Ok(Some((tokio::time::Instant::now() + delay, attempt)))
            }
        }
    }

    fn reauthenticated(&self, creds: &RedisCredentials, started: Instant) {
        let took = started.elapsed();
        tracing::debug!(subscription = self.id, ?took, "pub/sub re-authenticated");
        self.manager.emit(TokenEvent::ConnectionReauthenticated {
            connection_id: self.id,
            expires_on: creds.expires_on(),
            took,
        });
    }

    /// Runs `step` while delivering the live connection's messages. Sets `alive` to false if
    /// the live connection closes meanwhile. With a `marker`, stops reading the live connection
    /// at that marker (leaving what follows it queued) and sets `reached`.
    async fn pumping<F: std::future::Future>(
        &mut self,
        step: F,
        tail: &mut Vec<u64>,
        alive: &mut bool,
        marker: Option<(&[u8], &mut bool)>,
    ) -> std::result::Result<F::Output, Gone> {
        tokio::pin!(step);
        let (marker, mut reached) = match marker {
            Some((m, r)) => (Some(m), Some(r)),
            None => (None, None),
        };
        loop {
            let reading = *alive && !reached.as_deref().copied().unwrap_or(false);
            tokio::select! {
                biased;
                out = &mut step => return Ok(out),
                event = self.link.events.next(), if reading => match event {
                    Some(Event::Message(m)) => {
                        if marker.is_some_and(|mk| self.is_marker(&m, mk)) {
                            if let Some(r) = reached.as_deref_mut() {
                                *r = true;
                            }
                            continue;
                        }
                        tail.push(m.fingerprint());
                        self.deliver_new(m)?;
                    }
                    _ => *alive = false,
                },
            }
        }
    }

    /// Replaces the live connection with one subscribed with `creds`, losing and repeating
    /// nothing (see the module docs). On failure the live connection stays.
    async fn handover(
        &mut self,
        creds: &Arc<RedisCredentials>,
    ) -> std::result::Result<Result<Switch>, Gone> {
        let mut tail = Vec::new();
        let mut alive = true;
        let options = self.options.clone();
        let control = self.control.clone();
        let subs = self.subs.clone();
        // 1. The new connection, subscribed to everything and to the control channel.
        let opened = self
            .pumping(
                Link::open(&options, creds, &control, &subs),
                &mut tail,
                &mut alive,
                None,
            )
            .await?;
        let mut new = match opened {
            Ok((link, refused)) => {
                self.drop_refused(refused);
                link
            }
            Err(e) => {
                return Ok(Err(e));
            }
        };
        // 2. The marker, published after the new connection's subscriptions are confirmed.
        let marker = format!("{:032x}", rand::random::<u128>()).into_bytes();
        // The old connection's copy of the marker can arrive before the publisher's reply.
        let mut reached = false;
        let marked = if alive && new.control && self.link.control {
            let publish = publish_marker(&options, creds, &mut new.conn, &control, &marker);
            let pumped = self
                .pumping(
                    publish,
                    &mut tail,
                    &mut alive,
                    Some((&marker, &mut reached)),
                )
                .await?;
            match pumped {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "could not publish a handover marker; falling back");
                    false
                }
            }
        } else {
            false
        };
        if marked && alive {
            // 3. The old connection's messages up to its copy of the marker...
            let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
            while !reached {
                match tokio::time::timeout_at(deadline, self.link.events.next()).await {
                    Ok(Some(Event::Message(m))) => {
                        if self.is_marker(&m, &marker) {
                            reached = true;
                        } else {
                            tail.push(m.fingerprint());
                            self.deliver_new(m)?;
                        }
                    }
                    Ok(_) => {
                        tracing::debug!(
                            subscription = self.id,
                            "the old connection closed before the handover marker; falling back"
                        );
                        break;
                    }
                    Err(_) => {
                        tracing::debug!(
                            subscription = self.id,
                            "the handover marker did not reach the old connection; falling back"
                        );
                        break;
                    }
                }
            }
            if reached {
                // ...then the new connection's messages after its copy.
                let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
                loop {
                    match tokio::time::timeout_at(deadline, new.events.next()).await {
                        Ok(Some(Event::Message(m))) => {
                            if self.is_marker(&m, &marker) {
                                self.dedup.clear();
                                self.link = new;
                                return Ok(Ok(Switch::Seamless));
                            }
                            // Published before the marker: the old connection delivered it.
                        }
                        // The new connection failed; the old one's messages after the marker
                        // are still queued, so nothing is lost by keeping it.
                        _ => {
                            return Ok(Err(Error::Redis(Arc::new(timed_out(
                                "the handover marker on the new connection",
                            )))))
                        }
                    }
                }
            }
            alive = false;
        }
        if !marked {
            tracing::debug!(
                subscription = self.id,
                alive,
                new_control = new.control,
                old_control = self.link.control,
                "handover without a marker"
            );
        }
        // Fallback: no marker. Stop the old connection's subscriptions, deliver all it got, then
        // switch, flagging the new connection's first messages that repeat the old one's.
        if alive {
            let mut old = self.link.conn.clone_handle();
            let unsubscribe = async {
                for (kind, set) in [
                    (SubscriptionKind::Channel, &subs.channels),
                    (SubscriptionKind::Pattern, &subs.patterns),
                    (SubscriptionKind::Shard, &subs.shards),
                ] {
                    unsubscribe_all(&mut old, kind, set.iter().cloned().collect()).await?;
                }
                Ok::<(), Error>(())
            };
            let done = self
                .pumping(unsubscribe, &mut tail, &mut alive, None)
                .await?;
            if let Err(e) = done {
                tracing::debug!(error = %e, "could not unsubscribe the old connection");
            }
            // Everything the old connection received before its unsubscribe confirmations is
            // queued by now.
            while let Some(Some(Event::Message(m))) = self.link.events.next().now_or_never() {
                tail.push(m.fingerprint());
                self.deliver_new(m)?;
            }
        }
        self.dedup.clear();
        for f in tail {
            *self.dedup.entry(f).or_insert(0) += 1;
        }
        self.link = new;
        // Alive: the old connection was unsubscribed and drained, so nothing fell between the
        // two; dead: what it would have received before the switch is unaccounted for.
        Ok(Ok(if alive { Switch::Seamless } else { Switch::Gap }))
    }

    fn is_marker(&self, m: &Message, marker: &[u8]) -> bool {
        m.kind == SubscriptionKind::Channel && m.channel == self.control && m.payload == marker
    }
}

/// How a handover ended.
enum Switch {
    /// Every message was delivered once (duplicates flagged).
    Seamless,
    /// The old connection died before the switch point: messages may be missing.
    Gap,
}

/// Publishes the handover marker: from the new connection on RESP3, from a short-lived plain
/// connection on RESP2 (a RESP2 connection in subscribed mode may not publish).
async fn publish_marker(
    options: &ConnectOptions,
    creds: &RedisCredentials,
    new: &mut LinkConn,
    control: &[u8],
    marker: &[u8],
) -> Result<()> {
    let publish = redis::cmd("PUBLISH").arg(control).arg(marker).to_owned();
    let step = async {
        let receivers: i64 = match new {
            LinkConn::Resp3(conn) => publish.query_async(conn).await?,
            LinkConn::Resp2(_) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(options.connect_timeout))
                    .set_response_timeout(Some(STEP_TIMEOUT));
                let mut conn = options.open_multiplexed(creds, config).await?;
                publish.query_async(&mut conn).await?
            }
        };
        if receivers < 2 {
            return Err(Error::Config(format!(
                "the handover marker reached {receivers} connection(s), not 2"
            )));
        }
        Ok(())
    };
    tokio::time::timeout(STEP_TIMEOUT, step)
        .await
        .map_err(|_| Error::Redis(Arc::new(timed_out("publishing the handover marker"))))?
}

async fn unsubscribe_all(
    conn: &mut LinkConn,
    kind: SubscriptionKind,
    names: Vec<Vec<u8>>,
) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let step = async {
        match (conn, kind) {
            (LinkConn::Resp2(sink), SubscriptionKind::Channel) => sink.unsubscribe(names).await?,
            (LinkConn::Resp2(sink), SubscriptionKind::Pattern) => sink.punsubscribe(names).await?,
            (LinkConn::Resp3(conn), SubscriptionKind::Channel) => conn.unsubscribe(names).await?,
            (LinkConn::Resp3(conn), SubscriptionKind::Pattern) => conn.punsubscribe(names).await?,
            (LinkConn::Resp3(conn), SubscriptionKind::Shard) => {
                for n in names {
                    redis::cmd("SUNSUBSCRIBE")
                        .arg(n)
                        .query_async::<Value>(conn)
                        .await?
                        .extract_error()?;
                }
            }
            (LinkConn::Resp2(_), SubscriptionKind::Shard) => {}
        }
        Ok::<(), Error>(())
    };
    tokio::time::timeout(STEP_TIMEOUT, step)
        .await
        .map_err(|_| Error::Redis(Arc::new(timed_out("unsubscribing the old connection"))))?
}
