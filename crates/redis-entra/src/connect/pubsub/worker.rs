//! The subscription's task: serves subscription changes, delivers messages into the bounded
//! queue (dropping the connection when the application falls behind), and replaces a lost
//! connection. Token renewal is in [`handover`](super::handover).

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::StreamExt;
use tokio::sync::mpsc;

use super::dedup::screen;
use super::link::{shard_needs_resp3, Event, Link, Refused};
use super::message::Message;
use super::subscriptions::{op_copy, Op, Request, SubscriptionKind, Subscriptions};
use super::MESSAGE_BUFFER;
use crate::connect::multiplexed::is_connection_error;
use crate::connect::options::{ConnectOptions, Protocol};
use crate::error::{Error, Result};
use crate::token::events::TokenEvent;
use crate::token::manager::TokenManager;

/// The subscription's task.
pub(super) struct Worker {
    pub(super) id: u64,
    pub(super) options: ConnectOptions,
    pub(super) manager: TokenManager,
    pub(super) tokens: crate::CredentialsWatch,
    pub(super) control: Vec<u8>,
    pub(super) subs: Subscriptions,
    pub(super) out: mpsc::Sender<Message>,
    pub(super) link: Link,
    /// After a handover without a marker: fingerprints of what the old connection delivered
    /// during it, to flag the new connection's first messages that repeat them.
    pub(super) dedup: HashMap<u64, usize>,
    /// Messages dropped because the application's buffer was full (0: not behind).
    pub(super) behind: u64,
}

/// The application dropped the subscription.
pub(super) struct Gone;

impl Worker {
    pub(super) async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let _ = self.serve(&mut requests).await;
        tracing::debug!(subscription = self.id, "pub/sub stopped");
    }

    async fn serve(
        &mut self,
        requests: &mut mpsc::Receiver<Request>,
    ) -> std::result::Result<(), Gone> {
        let mut requests_open = true;
        let mut retry: Option<(tokio::time::Instant, u32)> = None;
        let mut probe = self.options.health_check_interval.and_then(|every| {
            (self.options.protocol == Protocol::Resp2).then(|| {
                let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            })
        });
        loop {
            if self.behind > 0 || self.link.overflowed() {
                self.catch_up().await?;
            }
            let retry_at = retry.map(|(at, _)| at);
            tokio::select! {
                biased;
                _ = self.out.closed() => return Err(Gone),
                request = requests.recv(), if requests_open => match request {
                    Some(r) => self.handle(r).await?,
                    None => requests_open = false,
                },
                creds = self.tokens.next() => match creds {
                    Some(creds) if creds.generation() > self.link.token_generation => {
                        retry = self.renew(creds, 0).await?;
                    }
                    Some(_) => {}
                    None => return Err(Gone),
                },
                _ = sleep_until(retry_at), if retry.is_some() => {
                    let attempt = retry.map(|(_, a)| a).unwrap_or(0);
                    retry = None;
                    if let Some(creds) = self.manager.current() {
                        if creds.generation() > self.link.token_generation {
                            retry = self.renew(creds, attempt).await?;
                        }
                    }
                },
                _ = tick(&mut probe) => {
                    if !self.link.ping().await {
                        self.replace("the connection stopped answering").await?;
                    }
                },
                // Last, so that a flood of messages cannot hold back a token or a request.
                event = self.link.events.next() => match event {
                    Some(Event::Message(m)) => self.deliver_new(m)?,
                    _ if self.link.overflowed() => self.catch_up().await?,
                    _ => self.replace("the server closed the connection").await?,
                },
            }
        }
    }

    /// Hands a message from the live connection to the application.
    pub(super) fn deliver_new(&mut self, m: Message) -> std::result::Result<(), Gone> {
        match screen(&mut self.dedup, &self.control, m) {
            Some(m) => self.deliver(m),
            None => Ok(()),
        }
    }

    /// Queues a message for the application; past [`MESSAGE_BUFFER`] the application has
    /// fallen behind, and the message is dropped (the serve loop reports the gap).
    fn deliver(&mut self, m: Message) -> std::result::Result<(), Gone> {
        if self.behind > 0 {
            self.behind += 1;
            return Ok(());
        }
        match self.out.try_send(m) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.behind = 1;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Gone),
        }
    }

    /// The application fell behind: drop the connection (no more buffering), wait until it has
    /// read half of what is buffered, then resubscribe and report the gap.
    async fn catch_up(&mut self) -> std::result::Result<(), Gone> {
        let dropped = self.behind;
        tracing::warn!(
            subscription = self.id,
            dropped,
            "the application fell behind its pub/sub buffer; dropping the connection"
        );
        // No more reading from the old connection: its messages are the gap, reported now.
        self.link.events = futures::stream::pending().boxed();
        self.manager.emit(TokenEvent::Reconnected {
            connection_id: self.id,
            reason: format!(
                "the application fell behind by more than {MESSAGE_BUFFER} messages: the connection was dropped, and messages published until it is replaced are lost"
            ),
        });
        tokio::select! {
            permits = self.out.reserve_many(MESSAGE_BUFFER / 2) => {
                permits.map_err(|_| Gone)?;
            }
            _ = self.out.closed() => return Err(Gone),
        }
        self.behind = 0;
        self.replace("resubscribing once the application caught up")
            .await
    }

    /// Drops `names` the server refused on a new connection from the subscription, and says so.
    pub(super) fn drop_refused(&mut self, refused: Vec<Refused>) {
        for r in refused {
            let name = String::from_utf8_lossy(&r.name).into_owned();
            tracing::warn!(subscription = self.id, %name, error = %r.error, "the server refused a subscription; it is dropped");
            self.subs.of(r.kind).remove(&r.name);
            self.manager.emit(TokenEvent::SubscriptionDropped {
                connection_id: self.id,
                name,
                error: r.error,
            });
        }
    }

    async fn handle(&mut self, r: Request) -> std::result::Result<(), Gone> {
        let Request {
            op,
            kind,
            mut names,
            reply,
        } = r;
        if kind == SubscriptionKind::Shard && self.options.protocol == Protocol::Resp2 {
            let _ = reply.send(Err(shard_needs_resp3()));
            return Ok(());
        }
        names.retain(|n| *n != self.control);
        if matches!(op, Op::Unsubscribe) && names.is_empty() {
            names = self.subs.of(kind).iter().cloned().collect();
        }
        let result = self.change_live(op_copy(&op), kind, names.clone()).await;
        let result = match result {
            Err(Error::Redis(e)) if is_connection_error(&e) => {
                // The replacement connection subscribes to it; the caller hears once the server
                // confirmed (or refused) it there.
                self.record(&op, kind, names.clone());
                self.replace("the connection was lost").await?;
                let set = self.subs.of(kind);
                let result = match op {
                    Op::Subscribe if !names.iter().all(|n| set.contains(n)) => Err(Error::Config(
                        "the server refused the subscription on the new connection (see the SubscriptionDropped event)".into(),
                    )),
                    _ => Ok(()),
                };
                let _ = reply.send(result);
                return Ok(());
            }
            other => other,
        };
        if result.is_ok() {
            self.record(&op, kind, names);
        }
        let _ = reply.send(result);
        Ok(())
    }

    fn record(&mut self, op: &Op, kind: SubscriptionKind, names: Vec<Vec<u8>>) {
        let set = self.subs.of(kind);
        for n in names {
            match op {
                Op::Subscribe => {
                    set.insert(n);
                }
                Op::Unsubscribe => {
                    set.remove(&n);
                }
            }
        }
    }

    /// Changes a subscription on the live connection while still delivering its messages.
    async fn change_live(
        &mut self,
        op: Op,
        kind: SubscriptionKind,
        names: Vec<Vec<u8>>,
    ) -> Result<()> {
        // The confirmation arrives after every message published before it, all of which are
        // buffered in `events`; nothing needs pumping.
        self.link.change(op, kind, names).await
    }

    /// Replaces a lost connection with a fresh token and resubscribes, retrying until it works
    /// (or the application drops the subscription).
    pub(super) async fn replace(&mut self, reason: &str) -> std::result::Result<(), Gone> {
        let mut attempt = 0u32;
        // Failures to connect with a token in hand; they alone grow the backoff.
        let mut connect_failures = 0u32;
        loop {
            attempt += 1;
            let creds = tokio::select! {
                c = self.manager.credentials() => c,
                _ = self.out.closed() => return Err(Gone),
            };
            let creds = match creds {
                Ok(creds) => creds,
                // No token: `credentials` waited for the manager's next attempt (paced by its
                // retry policy), so ask again at once: the first token after an identity outage
                // is used as soon as it arrives.
                Err(e) if !matches!(e, Error::Stopped) => {
                    tracing::warn!(subscription = self.id, attempt, error = %e, "no token to resubscribe with");
                    continue;
                }
                Err(_) => return Err(Gone),
            };
            let opened = Link::open(&self.options, &creds, &self.control, &self.subs);
            let opened = tokio::select! {
                o = opened => o,
                _ = self.out.closed() => return Err(Gone),
            };
            match opened {
                Ok((link, refused)) => {
                    self.link = link;
                    self.dedup.clear();
                    self.drop_refused(refused);
                    tracing::info!(
                        subscription = self.id,
                        reason,
                        "pub/sub reconnected with a fresh token"
                    );
                    self.manager.emit(TokenEvent::Reconnected {
                        connection_id: self.id,
                        reason: reason.to_string(),
                    });
                    return Ok(());
                }
                Err(e) => {
                    if let Error::Redis(re) = &e {
                        if crate::connect::multiplexed::is_auth_error(re) {
                            self.manager.refresh_now();
                        }
                    }
                    tracing::warn!(subscription = self.id, attempt, error = %e, "pub/sub reconnect failed");
                    connect_failures += 1;
                    let delay = Duration::from_millis(100u64 << connect_failures.min(5))
                        .min(Duration::from_secs(2));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.out.closed() => return Err(Gone),
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn tick(probe: &mut Option<tokio::time::Interval>) {
    match probe {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
