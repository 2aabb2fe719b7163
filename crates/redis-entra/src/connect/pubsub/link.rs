//! One subscribed connection: opening it (subscribed to the control channel and to everything
//! the application subscribed to), changing its subscriptions, probing it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use futures::stream::{BoxStream, StreamExt};
use redis::aio::{MultiplexedConnection, PubSubSink};
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::message::Message;
use super::subscriptions::{Op, SubscriptionKind, Subscriptions};
use super::{MESSAGE_BUFFER, STEP_TIMEOUT};
use crate::connect::multiplexed::is_connection_error;
use crate::connect::options::{ConnectOptions, Protocol};
use crate::error::{Error, Result};
use crate::token::credentials::RedisCredentials;

/// What a subscribed connection reports.
pub(super) enum Event {
    Message(Message),
    Closed,
}

pub(super) enum LinkConn {
    Resp2(PubSubSink),
    Resp3(MultiplexedConnection),
}

/// A subscription the server refused on a new connection.
pub(super) struct Refused {
    pub(super) kind: SubscriptionKind,
    pub(super) name: Vec<u8>,
    pub(super) error: String,
}

/// One subscribed connection.
pub(super) struct Link {
    pub(super) conn: LinkConn,
    pub(super) events: BoxStream<'static, Event>,
    /// Set when the connection's own buffer (RESP3 pushes) filled: the application fell behind.
    overflowed: Arc<AtomicBool>,
    pub(super) token_generation: u64,
    pub(super) expires_on: SystemTime,
    /// Whether it is subscribed to the control channel (so a marker can be used).
    pub(super) control: bool,
}

pub(super) fn shard_needs_resp3() -> Error {
    Error::Config(
        "SSUBSCRIBE needs RESP3 with this client: set ConnectOptions::protocol to Protocol::Resp3"
            .into(),
    )
}

impl LinkConn {
    /// Another handle to the same connection.
    pub(super) fn clone_handle(&self) -> Self {
        match self {
            Self::Resp2(sink) => Self::Resp2(sink.clone()),
            Self::Resp3(conn) => Self::Resp3(conn.clone()),
        }
    }
}

impl Link {
    /// Opens a connection authenticated with `creds`, subscribed to the control channel (if
    /// allowed) and to `subs`, less what the server refuses (returned).
    pub(super) async fn open(
        options: &ConnectOptions,
        creds: &RedisCredentials,
        control: &[u8],
        subs: &Subscriptions,
    ) -> Result<(Self, Vec<Refused>)> {
        let overflowed = Arc::new(AtomicBool::new(false));
        let (conn, events) = match options.protocol {
            Protocol::Resp2 => {
                if !subs.shards.is_empty() {
                    return Err(shard_needs_resp3());
                }
                let pubsub = options.open_pubsub(creds).await?;
                let (sink, stream) = pubsub.split();
                let events = stream
                    .filter_map(|msg| async move { Message::from_msg(msg).map(Event::Message) })
                    .chain(futures::stream::once(async { Event::Closed }))
                    .boxed();
                (LinkConn::Resp2(sink), events)
            }
            Protocol::Resp3 => {
                let (tx, mut rx) = mpsc::channel(MESSAGE_BUFFER);
                let full = overflowed.clone();
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(options.connect_timeout))
                    .set_response_timeout(options.response_timeout)
                    .set_push_sender(move |info: PushInfo| {
                        let event = if info.kind == PushKind::Disconnection {
                            Some(Event::Closed)
                        } else {
                            Message::from_push(info).map(Event::Message)
                        };
                        if let Some(event) = event {
                            // Bounded: a full buffer means the application fell behind; the
                            // task drops this connection (see the module docs).
                            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(event) {
                                full.store(true, Ordering::Release);
                            }
                        }
                        Ok::<(), redis::aio::SendError>(())
                    });
                let conn = options.open_multiplexed(creds, config).await?;
                let full = overflowed.clone();
                let events = futures::stream::poll_fn(move |cx| match rx.poll_recv(cx) {
                    // What was buffered first, then the end of this connection.
                    Poll::Pending if full.load(Ordering::Acquire) => Poll::Ready(None),
                    other => other,
                })
                .chain(futures::stream::once(async { Event::Closed }))
                .boxed();
                (LinkConn::Resp3(conn), events)
            }
        };
        let mut link = Self {
            conn,
            events,
            overflowed,
            token_generation: creds.generation(),
            expires_on: creds.expires_on(),
            control: false,
        };
        match link
            .change(
                Op::Subscribe,
                SubscriptionKind::Channel,
                vec![control.to_vec()],
            )
            .await
        {
            Ok(()) => link.control = true,
            Err(Error::Redis(e)) if is_connection_error(&e) => return Err(Error::Redis(e)),
            Err(e) => {
                tracing::debug!(error = %e, "no control channel: handovers will flag duplicates")
            }
        }
        let mut refused = Vec::new();
        for (kind, set) in [
            (SubscriptionKind::Channel, &subs.channels),
            (SubscriptionKind::Pattern, &subs.patterns),
            (SubscriptionKind::Shard, &subs.shards),
        ] {
            if set.is_empty() {
                continue;
            }
            match link
                .change(Op::Subscribe, kind, set.iter().cloned().collect())
                .await
            {
                Ok(()) => {}
                Err(Error::Redis(e)) if is_connection_error(&e) => return Err(Error::Redis(e)),
                // Redis refuses the whole command for one channel it denies: find which, and
                // keep the others.
                Err(_) => {
                    for name in set {
                        match link.change(Op::Subscribe, kind, vec![name.clone()]).await {
                            Ok(()) => {}
                            Err(Error::Redis(e)) if is_connection_error(&e) => {
                                return Err(Error::Redis(e))
                            }
                            Err(e) => refused.push(Refused {
                                kind,
                                name: name.clone(),
                                error: e.to_string(),
                            }),
                        }
                    }
                }
            }
        }
        Ok((link, refused))
    }

    /// Whether the application fell behind this connection's buffer.
    pub(super) fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Acquire)
    }

    /// Subscribes or unsubscribes, waiting for the server's confirmations.
    pub(super) async fn change(
        &mut self,
        op: Op,
        kind: SubscriptionKind,
        names: Vec<Vec<u8>>,
    ) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let step = async {
            match (&mut self.conn, op, kind) {
                (LinkConn::Resp2(sink), Op::Subscribe, SubscriptionKind::Channel) => {
                    sink.subscribe(names).await?
                }
                (LinkConn::Resp2(sink), Op::Unsubscribe, SubscriptionKind::Channel) => {
                    sink.unsubscribe(names).await?
                }
                (LinkConn::Resp2(sink), Op::Subscribe, SubscriptionKind::Pattern) => {
                    sink.psubscribe(names).await?
                }
                (LinkConn::Resp2(sink), Op::Unsubscribe, SubscriptionKind::Pattern) => {
                    sink.punsubscribe(names).await?
                }
                (LinkConn::Resp2(_), _, SubscriptionKind::Shard) => return Err(shard_needs_resp3()),
                (LinkConn::Resp3(conn), Op::Subscribe, SubscriptionKind::Channel) => {
                    conn.subscribe(names).await?
                }
                (LinkConn::Resp3(conn), Op::Unsubscribe, SubscriptionKind::Channel) => {
                    conn.unsubscribe(names).await?
                }
                (LinkConn::Resp3(conn), Op::Subscribe, SubscriptionKind::Pattern) => {
                    conn.psubscribe(names).await?
                }
                (LinkConn::Resp3(conn), Op::Unsubscribe, SubscriptionKind::Pattern) => {
                    conn.punsubscribe(names).await?
                }
                (LinkConn::Resp3(conn), op, SubscriptionKind::Shard) => {
                    // One name per command: redis-rs then reads its single confirmation as the
                    // reply.
                    let name = match op {
                        Op::Subscribe => "SSUBSCRIBE",
                        Op::Unsubscribe => "SUNSUBSCRIBE",
                    };
                    for n in names {
                        redis::cmd(name)
                            .arg(n)
                            .query_async::<Value>(conn)
                            .await?
                            .extract_error()?;
                    }
                }
            }
            Ok(())
        };
        tokio::time::timeout(STEP_TIMEOUT, step)
            .await
            .map_err(|_| Error::Redis(Arc::new(timed_out("a subscription change"))))?
    }

    /// Whether the connection answers `PING`.
    pub(super) async fn ping(&mut self) -> bool {
        let pong = async {
            match &mut self.conn {
                LinkConn::Resp2(sink) => sink.ping::<Value>().await.is_ok(),
                LinkConn::Resp3(conn) => {
                    redis::cmd("PING").query_async::<Value>(conn).await.is_ok()
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), pong)
            .await
            .unwrap_or(false)
    }
}

pub(super) fn timed_out(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, what, "timed out".to_string()))
}
